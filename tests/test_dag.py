"""Snakefile and dvc.yaml describe the same DAG: same commands, same outputs, same inputs.

dvc.yaml may name a folder (runs/<profile>/train) where Snakemake lists the run files inside it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run, snakemake_jobs


def dvc_stages(project: Path) -> dict[str, dict]:
    """command -> {name, deps, outs} from DVC's own reading of dvc.yaml (params left out)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {
            stage.cmd: {
                "name": stage.name,
                "deps": {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)},
                "outs": {o.def_path for o in stage.outs},
            }
            for stage in repo.index.stages
        }


def covered(path: str, folders: set[str]) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from tests.conftest import copy_project

    project = copy_project(tmp_path_factory.mktemp("dag") / "project")
    return snakemake_jobs(project), dvc_stages(project)


def test_same_commands(both):
    snake, dvc = both
    assert set(snake) == set(dvc)
    # data per architecture, 12 x train, 12 x evaluate (6 configurations x 2 seeds), 4 notebooks, report
    assert len(snake) == 2 + 12 + 12 + 4 + 1


def test_same_outputs(both):
    snake, dvc = both
    for command, job in snake.items():
        assert set(job["outputs"]) == dvc[command]["outs"], command


def test_same_inputs(both):
    snake, dvc = both
    for command, job in snake.items():
        deps = dvc[command]["deps"]
        assert all(covered(i, deps) for i in job["inputs"]), (command, job["inputs"] - deps)
        # ...and DVC depends on nothing Snakemake does not read.
        assert all(any(covered(i, {d}) for i in job["inputs"]) for d in deps), command


def test_paper_profile_plans_cifar_and_the_six_configurations_at_two_seeds_on_gpus(project):
    jobs = snakemake_jobs(project, "--config", "profile=paper")
    rules = sorted(j["rule"] for j in jobs.values())
    assert rules.count("data") == 2 and rules.count("train") == 12 and rules.count("evaluate") == 12
    trained = sorted(c.split()[3] for c, j in jobs.items() if j["rule"] == "train")
    assert trained[:4] == ["alexnet-gate-s42", "alexnet-gate-s43", "alexnet-na-blog-s42", "alexnet-na-blog-s43"]
    # The post's four runs alone, as docs/paper-and-gpus.md says.
    jobs = snakemake_jobs(project, "--config", "profile=paper", "attentions=[none,na-blog]", "seeds=[42]")
    assert sum(j["rule"] == "train" for j in jobs.values()) == 4
    train_jobs = [j for j in jobs.values() if j["rule"] == "train"]
    assert all("gpu=1" in j["resources"] for j in train_jobs)
    assert all("--set 'profile=\"paper\"'" in c for c in jobs)


def test_on_a_gpu_machine_an_evaluation_takes_one_cpu_and_leaves_the_rest_to_trainings(project):
    """`--cores 16` with the paper profile: each training declares its 5 CPUs (process and 4 loader
    workers) and an evaluation its GPU and one CPU, so three trainings and an evaluation fit at once."""
    jobs = snakemake_jobs(project, "--cores", "16", "--config", "profile=paper")
    evaluations = [j for j in jobs.values() if j["rule"] == "evaluate"]
    assert evaluations and all(j["threads"] == 1 and "gpu=1" in j["resources"] for j in evaluations)
    assert all(j["threads"] == 5 for j in jobs.values() if j["rule"] == "train")
    # On the CPU an evaluation still takes every core: the oneDNN predictor uses them.
    jobs = snakemake_jobs(project, "--cores", "16", "--config", "profile=paper", "device=cpu")
    assert all(j["threads"] == 16 for j in jobs.values() if j["rule"] == "evaluate")


def test_demo_training_jobs_hold_no_gpu(both):
    snake, _ = both
    assert all("gpu=0" in j["resources"] for j in snake.values() if j["rule"] == "train")


def test_snakemake_lint_is_clean(project):
    proc = run(["snakemake", "--lint"], cwd=project)
    assert "Congratulations" in proc.stdout + proc.stderr


def test_ablation_is_planned_from_the_command_line(project):
    ablation = ["--config", "profile=paper", "attentions=[none,na-blog,na-official,na-paper,gate]", "seeds=[42,43,44]"]
    jobs = snakemake_jobs(project, *ablation)
    trained = sorted(c.split()[3] for c, j in jobs.items() if j["rule"] == "train")
    assert len(trained) == 2 * 5 * 3 and "resnet18-na-official-s44" in trained


def test_dvc_yaml_is_generated_from_the_pipeline_package(project):
    run(["python", "-m", "pipeline", "dvc-yaml", "--check"], cwd=project)
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("- pipeline/models/__init__.py\n", "", 1))
    proc = run(["python", "-m", "pipeline", "dvc-yaml", "--check"], cwd=project, check=False)
    assert proc.returncode == 1 and "dvc.yaml is out of date" in proc.stderr


def test_each_stage_depends_on_its_whole_import_closure():
    from pipeline.dag import deps

    train = deps.stage_code("train")
    # imported inside functions or by imported modules, and the kernel source fused.py reads
    assert {"pipeline/models/fused.py", "pipeline/models/kernels/na_kernels.cc", "pipeline/core/atomic.py",
            "pipeline/__init__.py", "pipeline/dag/params.schema.json"} <= set(train)
    assert "pipeline/models/inference.py" not in train and "pipeline/models/inference.py" in deps.stage_code("evaluate")
    assert "notebooks/comparison.py" in deps.stage_code("notebook", "comparison")
    assert "pipeline/analysis/provenance.py" in deps.stage_code("report")
    # the code a stage runs, and nothing a tool, the CLI or another stage adds
    assert "pipeline/data.py" not in train and "pipeline/__main__.py" not in train
    assert not any(f.startswith("pipeline/tools/") for s in ("data", "train", "evaluate", "report")
                   for f in deps.stage_code(s))


def test_relative_imports_count_as_much_as_absolute_ones(tmp_path, monkeypatch):
    from pipeline.dag import deps

    package = tmp_path / "pipeline"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "b.py", "c.py", "sub/__init__.py", "sub/e.py", "unused.py"):
        (package / name).write_text("")
    (package / "a.py").write_text("from . import b\nfrom .c import something\nfrom .sub import e\n")
    (package / "sub" / "d.py").write_text("from .. import c\nfrom .e import f\n")
    monkeypatch.setattr(deps, "PACKAGE", package)
    monkeypatch.setattr(deps, "ROOT", tmp_path)
    deps._package_files.cache_clear()
    try:
        assert deps.closure(package / "a.py") == [f"pipeline/{n}" for n in (
            "__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/e.py")]
        assert deps.closure(package / "sub" / "d.py") == [f"pipeline/{n}" for n in (
            "__init__.py", "c.py", "sub/__init__.py", "sub/d.py", "sub/e.py")]
    finally:
        deps._package_files.cache_clear()


def test_the_dag_machinery_imports_no_paddle():
    """Every module of pipeline/dag and whatever the rules import: Snakemake plans from them, on a
    login node that may have no Paddle (and importing it costs seconds per dry run)."""
    rules = "\n".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))])
    imports = re.findall(r"^from pipeline[\w.]* import .*$", rules, re.M)
    assert any(line.startswith("from pipeline.hardware import") for line in imports)  # what a rule asks for
    code = "\n".join(["import importlib, pkgutil, sys", "import pipeline.dag as dag",
                      "for m in pkgutil.iter_modules(dag.__path__): importlib.import_module(f'pipeline.dag.{m.name}')",
                      *imports, "print(sorted(m for m in sys.modules if m.split('.')[0] == 'paddle'))"])
    assert run([sys.executable, "-c", code], cwd=ROOT).stdout.strip() == "[]"
