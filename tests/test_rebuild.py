"""When results are rebuilt, asked of both engines on one built `ci` project, one case per row.

For every case the test makes one edit and asserts three things against the same expected set of
stages: the jobs Snakemake plans for their own sake (its reason is not only "input files updated
by another job"), the stages `dvc status` reports changed, and, for Snakemake, that the whole
plan is that set and what depends on it. Then it undoes the edit, times included.

The code rows come from pipeline/dag/deps.py and the settings rows from config.RESULT_SETTINGS and
config.RUN_ONLY_SETTINGS, so a new module, package file or setting gets its row by itself.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipeline.dag import config, deps, paths
from tests.conftest import ROOT, copy_project, planned_jobs, run

pytestmark = pytest.mark.e2e
RUNS = ["alexnet-none-s42", "alexnet-na-blog-s42"]
NOTEBOOKS = [f"notebook {n}" for n in paths.NOTEBOOKS]
# A stage is named by its command without `python -m pipeline.` and --set options, as both engines run it.
STAGES = {"data": ["data alexnet"], "train": [f"train {r}" for r in RUNS],
          "evaluate": [f"evaluate {r}" for r in RUNS], "notebook": NOTEBOOKS, "report": ["report"]}
# A value each setting can change to (the ci profile's values are the demo's, see params.yaml).
NEW_VALUES = {
    "datasets": ("alexnet", "cifar10"), "image_size": ("alexnet", 72), "epochs": 2, "batch_size": 32, "lr": 0.002,
    "weight_decay": 2.0e-5, "label_smoothing": 0.2, "train_subset": 200, "val_subset": 100, "device": "cpu",
    "num_workers": 1, "amp": "bf16", "augment_on_device": True, "devices_per_job": 2, "log_every": 5,
    "eval_batch_size": 64, "throughput_warmup": 3,
    "train_threads": 2, "train_mem_mb": 5000, "train_runtime_min": ("alexnet", 20), "prefetch_batches": 3,
    "pin_memory": False,
}


def stages(*kinds: str) -> set[str]:
    return {s for kind in kinds for s in STAGES[kind]}


def sha256s(project: Path, layout: paths.Layout) -> dict[str, str]:
    folders = [layout.prepared_dir, layout.runs, layout.reports]
    return {f.relative_to(project).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()
            for folder in folders for f in sorted((project / folder).rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A ci project of two runs built by `snakemake --cores 2 all`, dvc.lock committed. Its demo
    profile is made as small as ci, so switching profiles costs seconds."""
    project = copy_project(tmp_path_factory.mktemp("rebuild") / "project", profile="ci", archs="[alexnet]",
                           attentions="[none, na-blog]", seeds="[42]")
    text = (project / "params.yaml").read_text()
    demo, ci = text.index("\n  demo:"), text.index("\n  ci:")
    small = text[demo:ci]
    for pattern, value in ((r"epochs: \d+", "epochs: 1"), (r"train_subset: null", "train_subset: 64"),
                           (r"val_subset: null", "val_subset: 64")):
        small, count = re.subn(pattern, value, small)
        assert count == 1, f"the demo profile has no {pattern}"
    (project / "params.yaml").write_text(text[:demo] + small + text[ci:])
    run(["snakemake", "--cores", "2", "all"], cwd=project)
    run(["git", "add", "dvc.lock"], cwd=project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "results"], cwd=project)
    return SimpleNamespace(project=project, layout=paths.Layout("ci", "ci"),
                           sha256=sha256s(project, paths.Layout("ci", "ci")))


def _dry_run(project: Path, *args: str) -> dict[str, dict] | None:
    """stage -> {rule, inputs, outputs, reason} of every job a dry run plans; None if some of the
    jobs' inputs are missing (and only a rule that is not allowed to run would make them)."""
    proc = run(["snakemake", "-n", "-p", *args], cwd=project, check=False)
    if proc.returncode and "MissingInputException" in proc.stdout + proc.stderr:
        return None
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {re.sub(r" --set \S+", "", job["command"]).removeprefix("python -m pipeline."): job
            for job in planned_jobs(proc.stdout)}


def _own_reason(job: dict) -> bool:
    return any(not part.startswith("Input files updated by another job") for part in job["reason"].split("; "))


def snakemake_plan(project: Path, edited: str | None = None) -> tuple[set[str], set[str]]:
    """(every job Snakemake would run, those it would run for their own sake).

    Snakemake gives a job downstream of a rerun only that reason and looks no further. After an
    edit to a file, a job runs for its own sake if the file is one of its inputs. Otherwise each
    such job is asked again on its own, its rules alone allowed to run: are its params, code,
    inputs or outputs changed?"""
    jobs = _dry_run(project, "all")
    direct = {name for name, job in jobs.items() if _own_reason(job) or edited in job["inputs"]}
    masked: dict[str, list[str]] = {}  # stage kind -> jobs (the notebooks, four rules, are asked together)
    for name in jobs:
        if name not in direct and edited is None:
            masked.setdefault(name.split()[0], []).append(name)

    def ask(names: list[str]) -> set[str]:
        targets = [jobs[name]["outputs"][-1] for name in names]
        rules = sorted({jobs[name]["rule"] for name in names})
        asked = _dry_run(project, *targets, "--allowed-rules", *rules)
        if asked is None:  # they read files that do not exist yet (a new run's): their inputs changed
            return set(names)
        return {name for name, job in asked.items() if _own_reason(job)}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for found in pool.map(ask, masked.values()):
            direct |= found
    return set(jobs), direct


def dvc_changed(project: Path) -> set[str]:
    from dvc.repo import Repo

    changed = json.loads(run(["dvc", "status", "--json"], cwd=project).stdout or "{}")
    with Repo(str(project)) as repo:
        commands = {stage.name: stage.cmd for stage in repo.index.stages}
    return {commands[name].removeprefix("python -m pipeline.") for name in changed}


def downstream(direct: set[str]) -> set[str]:
    """`direct` and what depends on it in this project's DAG."""
    reached = set(direct)
    if any(s.startswith("data ") for s in reached):
        reached |= stages("train")
    reached |= {f"evaluate {s.split()[1]}" for s in reached if s.startswith("train ")}
    if any(s.startswith("train ") for s in reached):
        reached |= stages("notebook")
    elif any(s.startswith("evaluate ") for s in reached):  # the learning curves read training's outputs alone
        reached |= stages("notebook") - {"notebook learning_curves"}
    return reached | ({"report"} if reached else set())


def assert_plans(project: Path, expected: set[str], edited: str | None = None) -> None:
    planned, direct = snakemake_plan(project, edited)
    assert direct == expected, "Snakemake"
    assert dvc_changed(project) == expected, "DVC"
    assert planned == downstream(expected), "Snakemake's whole plan"


class Edit:
    """Change a file, and put back its bytes and times afterwards."""

    def __init__(self, path: Path):
        self.path, self.text, self.stat = path, path.read_bytes(), path.stat()

    def undo(self):
        self.path.write_bytes(self.text)
        os.utime(self.path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))


def set_param(project: Path, dotted: str, value) -> Edit:
    edit = Edit(project / "params.yaml")
    params = yaml.safe_load(edit.text)
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = value
    edit.path.write_text(yaml.safe_dump(params, sort_keys=False))
    return edit


def code_files() -> list[str]:
    stage_code = [deps.stage_code(s) for s in ("data", "train", "evaluate", "report")]
    stage_code += [deps.stage_code("notebook", n) for n in paths.NOTEBOOKS]
    return sorted({f for files in stage_code for f in files})


def stages_reading(file: str) -> set[str]:
    found = {s for kind in ("data", "train", "evaluate", "report") if file in deps.stage_code(kind)
             for s in STAGES[kind]}
    return found | {f"notebook {n}" for n in paths.NOTEBOOKS if file in deps.stage_code("notebook", n)}


@pytest.mark.parametrize("file", code_files())
def test_an_edit_to_a_stages_code_reruns_exactly_the_stages_that_run_it(built, file):
    edit = Edit(built.project / file)
    edit.path.write_bytes(edit.text + b"\n")
    try:
        assert_plans(built.project, stages_reading(file), edited=file)
    finally:
        edit.undo()


def outside_every_stage() -> list[str]:
    """The package's files that no stage runs: the tools, the CLI and the DAG's own machinery."""
    package = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pipeline").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    return sorted(package - set(code_files()))


def test_the_tools_and_the_cli_are_outside_every_stage():
    tools = {f"pipeline/tools/{name}.py" for name in ("__init__", "bench", "doctor", "params")}
    assert tools | {"pipeline/__main__.py", "pipeline/dag/deps.py", "pipeline/dag/dvc_yaml.py",
                    "pipeline/dag/pull.py"} <= set(outside_every_stage())


def test_an_edit_to_every_tool_and_the_cli_reruns_nothing(built):
    """All of them edited at once: a plan only grows with more edits, so an empty one is empty for each."""
    edits = [Edit(built.project / file) for file in outside_every_stage()]
    for edit in edits:
        edit.path.write_bytes(edit.text + b"\n# edited\n")
    try:
        assert_plans(built.project, set())
    finally:
        for edit in edits:
            edit.undo()


def _setting_cases():
    for key, (uses, _) in config.RESULT_SETTINGS.items():
        yield pytest.param(key, stages(*uses, "report"), id=f"result-{key}")
    for key in config.RUN_ONLY_SETTINGS:
        yield pytest.param(key, set(), id=f"run-only-{key}")


@pytest.mark.parametrize(("key", "expected"), list(_setting_cases()))
def test_a_setting_of_the_active_profile_reruns_exactly_the_stages_it_can_change(built, key, expected):
    value = NEW_VALUES[key]
    dotted = f"profiles.ci.{key}" + (f".{value[0]}" if isinstance(value, tuple) else "")
    edit = set_param(built.project, dotted, value[1] if isinstance(value, tuple) else value)
    try:
        assert_plans(built.project, expected)
    finally:
        edit.undo()


@pytest.mark.parametrize(("dotted", "value", "expected"), [
    pytest.param("profiles.ci.image_size.resnet18", 40, {"report"}, id="the-size-of-an-arch-not-in-the-matrix"),
    pytest.param("profiles.demo.epochs", 7, set(), id="another-profile"),
    pytest.param("profiles.paper.lr", 0.01, set(), id="another-profile-the-paper"),
    pytest.param("profiles.paper.epochs", 40, {"notebook comparison"}, id="the-posts-setting"),
    pytest.param("download.mirrors", ["http://127.0.0.1:9/"], set(), id="where-archives-come-from"),
    pytest.param("download.md5", {"cifar-10-python.tar.gz": "0" * 32}, {"data alexnet"}, id="which-archive-counts"),
    pytest.param("epochs", 3, stages("train", "report"), id="a-top-level-override"),
    pytest.param("seeds", [42, 43], {"train alexnet-none-s43", "train alexnet-na-blog-s43", "evaluate alexnet-none-s43",
                                     "evaluate alexnet-na-blog-s43", *NOTEBOOKS, "report"}, id="adding-a-seed"),
])
def test_other_edits(built, dotted, value, expected):
    edit = set_param(built.project, dotted, value)
    try:
        assert_plans(built.project, expected)
    finally:
        edit.undo()


def test_nothing_to_do_after_the_build(built):
    assert_plans(built.project, set())


def test_another_configuration_and_back_rebuilds_nothing_and_keeps_every_byte(built):
    project = built.project
    # Snakemake: an override builds its own configuration beside ci's.
    out = run(["snakemake", "--cores", "2", "all", "--config", "epochs=2"], cwd=project).stdout
    other = paths.Layout("ci", config.configuration({**config.load(path=project / "params.yaml"), "epochs": 2},
                                                    path=project / "params.yaml"))
    assert other.configuration.startswith("ci-") and (project / other.report).exists(), out
    assert json.loads((project / other.train_summary(RUNS[0])).read_text())["epochs"] == 2
    assert f"{other.configuration} (overrides: epochs=2)" in (project / other.report).read_text()
    assert "ci (params.yaml as it is)" in (project / built.layout.report).read_text()
    # DVC: another profile, built by `dvc repro`, then back by editing params.yaml.
    edit = set_param(project, "profile", "demo")
    run(["dvc", "repro"], cwd=project)
    assert (project / paths.Layout("demo", "demo").report).exists()
    edit.undo()
    assert_plans(project, set())
    assert sha256s(project, built.layout) == built.sha256
    # ...and Snakemake switches to demo without rebuilding what DVC built there.
    edit = set_param(project, "profile", "demo")
    try:
        proc = run(["snakemake", "-n", "all"], cwd=project)
        assert "Nothing to be done" in proc.stdout + proc.stderr
    finally:
        edit.undo()


def test_a_run_that_fails_at_its_first_stage_leaves_every_earlier_result(built):
    project = built.project
    raw = project / "data/raw/cifar-10-python.tar.gz"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(b"not an archive")  # refused by its md5 before anything is read
    try:
        failed = run(["snakemake", "--cores", "1", "all", "--config", "profile=paper", "archs=[alexnet]", "seeds=[42]"],
                     cwd=project, check=False)
        assert failed.returncode != 0 and "has md5" in failed.stdout + failed.stderr
    finally:
        raw.unlink()
    assert sha256s(project, built.layout) == built.sha256
    assert_plans(project, set())


def test_the_no_op_rerun_is_quick(built):
    import time

    started = time.perf_counter()
    proc = run(["snakemake", "--cores", "4", "all"], cwd=built.project)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    print(f"no-op rerun: {time.perf_counter() - started:.1f} s")
    assert sha256s(built.project, built.layout) == built.sha256


def test_dvc_yaml_is_what_the_pipeline_generates(built):
    proc = subprocess.run(["python", "-m", "pipeline", "dvc-yaml", "--check"], cwd=built.project,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
