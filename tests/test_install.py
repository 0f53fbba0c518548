"""Installing Paddle's GPU build and keeping it: no documented extra brings the CPU build back, and
every command refuses a mixed install. The GPU build is a locally built stand-in distribution named
paddlepaddle-gpu 3.3.1 (an empty paddle package): the real one is neither installable nor usable here."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.hardware import paddle_setup
from tests.conftest import copy_project, run

STAND_IN = "paddlepaddle_gpu-3.3.1"
STAND_IN_FILES = {
    f"{STAND_IN}.dist-info/METADATA": "Metadata-Version: 2.1\nName: paddlepaddle-gpu\nVersion: 3.3.1\n",
    f"{STAND_IN}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: na-repro-tests\nRoot-Is-Purelib: true\n"
                                   "Tag: py3-none-any\n",
}


def stand_in_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{STAND_IN}-py3-none-any.whl"
    files = {"paddle/__init__.py": "", **STAND_IN_FILES}
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        record = f"{STAND_IN}.dist-info/RECORD"
        z.writestr(record, "".join(f"{n},,\n" for n in [*files, record]))
    return wheel


@pytest.mark.faults
def test_every_paddle_command_refuses_both_builds_at_once_in_one_line(tmp_path):
    """The stand-in's metadata beside the installed CPU build, as after `pip install -e .[cpu]` on a
    GPU machine: both paddlepaddle and paddlepaddle-gpu are then installed."""
    site = tmp_path / "site"
    for name, text in STAND_IN_FILES.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    project = copy_project(tmp_path / "project")
    for command in (["pipeline.train", "alexnet-none-s42"], ["pipeline.evaluate", "alexnet-none-s42"],
                    ["pipeline", "params"]):
        proc = run([sys.executable, "-m", *command], cwd=project, check=False,
                   env={"PYTHONPATH": str(site)})
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("error: both paddlepaddle 3.3.1 and paddlepaddle-gpu 3.3.1 are installed")
        assert "pip uninstall -y paddlepaddle paddlepaddle-gpu" in proc.stderr
        assert "pip install paddlepaddle-gpu==3.3.1 -i https://www.paddlepaddle.org.cn/packages/stable/" in proc.stderr
    assert not (project / "data").exists() and not (project / "logs").exists()


def test_the_install_check_passes_with_one_build():
    assert paddle_setup.paddle_builds() == {"paddlepaddle": "3.3.1"}
    paddle_setup.check_paddle_build()


@pytest.mark.e2e
def test_no_documented_install_selects_the_cpu_build_over_the_gpu_one(tmp_path):
    """A fresh environment holding the GPU build; pip resolves the project with every documented
    extra at once (a superset of what `pip install -e .`, ".[dev]", ".[slurm]", ... would select)
    and must pick no Paddle build."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    pip = [str(env / "bin/python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--no-index", str(stand_in_wheel(tmp_path / "wheels"))], check=True)
    project = copy_project(tmp_path / "project")
    report = tmp_path / "report.json"
    proc = subprocess.run([*pip, "install", "--dry-run", "--quiet", "--report", str(report),
                           f"{project}[dev,slurm,s3,ssh]"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"na-repro", "snakemake", "dvc-s3", "dvc-ssh", "snakemake-executor-plugin-slurm"} <= chosen
    assert not {"paddlepaddle", "paddlepaddle-gpu"} & chosen


def test_only_the_cpu_extra_names_a_paddle_build():
    import tomllib

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["cpu"] == [f"paddlepaddle=={paddle_setup.PADDLE_VERSION}"]
    named = [r for extra, reqs in project["optional-dependencies"].items() if extra != "cpu" for r in reqs]
    assert not [r for r in project["dependencies"] + named if r.lower().startswith("paddle")]


# What Snakemake asks conda before it lists the environments (`conda info`, `conda config --get`).
CONDA_STAND_IN = """#!/bin/sh
case "$1" in
  --version) echo "conda 24.7.1";;
  info) echo '{"conda_version": "24.7.1", "conda_prefix": "/nonexistent", "root_prefix": "/nonexistent",
               "envs_dirs": [], "platform": "linux-64", "channels": []}';;
  config) echo '{"get": {"channel_priority": "strict"}}';;
  *) echo "conda stand-in: only answers questions" >&2; exit 1;;
esac
"""


@pytest.mark.parametrize("overrides, environment", [
    (["profile=ci"], "envs/na-repro.yaml"),
    (["profile=paper"], "envs/na-repro-gpu.yaml"),
    (["profile=paper", "device=cpu"], "envs/na-repro.yaml"),
])
def test_under_sdm_conda_every_rule_gets_the_paddle_build_its_profile_trains_with(tmp_path, overrides, environment):
    """`snakemake --list-conda-envs` names the environments of every job of the DAG. No conda here
    (nor could paddlepaddle-gpu install): a stand-in answers Snakemake's questions and creates nothing."""
    stand_in = tmp_path / "bin" / "conda"
    stand_in.parent.mkdir()
    stand_in.write_text(CONDA_STAND_IN)
    stand_in.chmod(0o755)
    project = copy_project(tmp_path / "project")
    listed = run(["snakemake", "--list-conda-envs", "--sdm", "conda", "--config", *overrides], cwd=project,
                 env={"PATH": f"{stand_in.parent}:{Path(sys.executable).parent}:/usr/bin:/bin"}).stdout
    assert [line.split()[0] for line in listed.splitlines()[1:]] == [environment]


def test_the_gpu_environment_pins_the_gpu_build_from_paddles_index():
    import yaml

    def pip_lines(name):
        spec = yaml.safe_load((Path(__file__).parents[1] / "envs" / name).read_text())
        return next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))

    gpu = pip_lines("na-repro-gpu.yaml")
    assert f"--extra-index-url {paddle_setup.PADDLE_GPU_INDEX}" in gpu
    # no extra: no CPU build
    assert f"{paddle_setup.GPU_BUILD}=={paddle_setup.PADDLE_VERSION}" in gpu and "-e .." in gpu
    assert pip_lines("na-repro.yaml") == ["-e ..[cpu]"]
