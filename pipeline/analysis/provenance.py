"""The provenance manifest of a report: which artifacts (path, size, sha256), which code (git
commit, dirty or not), which parameters, software and devices, and how long each stage took.

Built from the files the stages wrote, never from memory of the run; the report stage writes it
to reports/provenance.json and shows it as the report's last appendix.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from pipeline.core import atomic

# The data stage's last line in its log (pipeline/data.py prints it).
from pipeline.dag import config, paths

DATA_DONE = re.compile(r"^data: done in ([0-9.]+) s$", re.MULTILINE)

# What each stage's recorded time covers (none of them includes starting Python).
MEASURES = {
    "data": "the whole stage: fetching, reading and saving an architecture's dataset (logs/<profile>/data/<arch>.log)",
    "train": "the training loop, per-epoch validation included, over all resumes (summary.json seconds)",
    "evaluate": "the stage after loading Paddle: compiling the predictor, evaluation, diagnostics "
                "(metrics.json seconds)",
    "notebook": "executing the notebook, as papermill records it (the .ipynb's metadata.papermill.duration)",
    "report": "this stage up to the manifest, hashing included (measured in the process)",
}


def artifacts(params: dict, layout: paths.Layout, runs: list[str]) -> list[dict]:
    """Path, size and sha256 of every file the report stage reads, folders file by file.

    Dot files are left out: Snakemake's .snakemake_timestamp marker (which .dvcignore also leaves
    out) and temp files of interrupted writes are not artifacts."""
    files = []
    bench = [p for p in (paths.BENCH_JSON, paths.BENCH_TABLE) if p.exists()]
    for path in layout.report_inputs(params["archs"], runs) + bench:
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
        else:
            files.append(path)
    return [{"path": f.as_posix(), "size": f.stat().st_size, "sha256": atomic.digest(f)} for f in files]


def git_state(cwd: Path | str = ".") -> dict:
    """The commit checked out and whether tracked files differ from it; nulls outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        # The whole work tree (:(top)) but this project's dvc.lock: `dvc repro` rewrites dvc.lock
        # while the stages run, so under DVC it is always modified when this stage runs.
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(exclude)dvc.lock")
    except (OSError, subprocess.CalledProcessError):  # no git, not a checkout, no commit yet
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(changed)}


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _paddle_version_module():
    """paddle.version without importing paddle: its generated version/__init__.py is plain
    constants, loaded on its own far faster than `import paddle`."""
    if "paddle" in sys.modules:
        return sys.modules["paddle"].version
    spec = importlib.util.find_spec("paddle")  # finds the package without running it
    if spec is None:
        return None
    source = importlib.util.spec_from_file_location("_paddle_version", Path(spec.origin).parent / "version/__init__.py")
    module = importlib.util.module_from_spec(source)
    source.loader.exec_module(module)
    return module


def versions() -> dict:
    def built_with(value) -> str | None:  # a CPU build says "False" (or "0") for CUDA and cuDNN
        return None if str(value) in ("False", "0", "None", "") else str(value)

    v = _paddle_version_module()
    paddle = None if v is None else {"version": v.full_version, "commit": v.commit,
                                     "cuda": built_with(v.cuda()), "cudnn": built_with(v.cudnn())}
    return {"python": platform.python_version(), "paddle": paddle,
            **{name: _installed(name) for name in ("snakemake", "dvc", "papermill", "jupytext", "numpy", "matplotlib")}}


def papermill_seconds(notebook: Path) -> float:
    return json.loads(notebook.read_text())["metadata"]["papermill"]["duration"]


def _data_seconds(log: Path) -> float | None:
    done = DATA_DONE.findall(log.read_text()) if log.exists() else []
    return float(done[-1]) if done else None


def wall_times(params: dict, layout: paths.Layout, runs: list[dict], report_seconds: float) -> dict:
    """stage -> {"measures": what the time covers, "seconds": {target: seconds or null}}."""
    seconds = {
        "data": {arch: _data_seconds(layout.log("data", arch)) for arch in params["archs"]},
        "train": {r["run"]: r["train"]["seconds"] for r in runs},
        "evaluate": {r["run"]: r["eval"]["seconds"] for r in runs},
        "notebook": {n: round(papermill_seconds(layout.executed_notebook(n)), 2) for n in paths.NOTEBOOKS},
        "report": {"report": round(report_seconds, 2)},
    }
    return {stage: {"measures": MEASURES[stage], "seconds": s} for stage, s in seconds.items()}


def build(params: dict, layout: paths.Layout, runs: list[dict], report_started: float) -> dict:
    """The manifest of `runs` (artifacts.load_run of every run of the matrix); `report_started` is
    the report stage's time.perf_counter() at its start."""
    files = artifacts(params, layout, [r["run"] for r in runs])
    settings = config.profile_settings(params)
    return {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_state(),
        "params": {"profile": params["profile"], "configuration": layout.configuration,
                   "overrides": config.cli_overrides(params), **{k: params[k] for k in config.MATRIX},
                   "settings": {k: settings[k] for k in config.RESULT_SETTINGS}},
        "versions": versions(),
        "devices": {"train": sorted({r["train"]["device"] for r in runs}),
                    "evaluate": sorted({r["eval"]["device"] for r in runs})},
        "wall_time": wall_times(params, layout, runs, time.perf_counter() - report_started),
        "artifacts": files,
    }
