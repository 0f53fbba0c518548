"""Keeping DVC's and Snakemake's records in step.

`commit` records what a Snakemake run built in DVC (the Snakefile's onsuccess). `dvc commit` may
rewrite the files it records, which gives them new modification times in no particular order;
Snakemake, which judges by those times, would then want to rerun jobs. The files are the same
bytes, so their times are put back.

`python -m pipeline pull` (`main`): results from the DVC remote, usable by both engines in one step.

1. `dvc pull` fetches what dvc.lock lists for params.yaml's configuration.
2. `dvc status` must then be clean. If the code, params.yaml or a pulled file does not match
   dvc.lock, telling Snakemake that the outputs are current would hide that they are stale, so
   the command stops there.
3. `snakemake --touch --forceall` records every output as built by the current code and params,
   in the DAG's order, without running anything. Snakemake judges by modification times and its
   own records in .snakemake/, which a clone does not have, and `dvc pull` writes files in no
   particular order; after this step a later edit reruns what it should.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline import PipelineError
from pipeline.dag import config


def _tool(name: str) -> str:
    """The tool of this environment (beside this Python), else the one on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name) or name


def _run(*cmd: str, capture: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([_tool(cmd[0]), *cmd[1:]], capture_output=capture, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] if capture else []
        raise PipelineError(f"`{' '.join(cmd)}` failed" + (f": {detail[0]}" if detail else " (see above)"))
    return proc


def commit(folders: list[Path]) -> None:
    """`dvc commit --force` of everything, keeping the times of the files in `folders`."""
    times = {f: f.stat().st_mtime_ns for folder in folders for f in Path(folder).rglob("*") if f.is_file()}
    _run("dvc", "commit", "--force", "--quiet")
    for file, mtime in times.items():
        if file.exists():
            os.utime(file, ns=(mtime, mtime))


def main(params: dict) -> None:
    if config.cli_overrides(params):
        raise PipelineError("pull brings in params.yaml's own configuration, which DVC records; drop the --set options")
    _run("dvc", "pull")
    changed = json.loads(_run("dvc", "status", "--json", capture=True).stdout or "{}")
    if changed:
        raise PipelineError(f"DVC is not clean after the pull ({', '.join(sorted(changed))} changed): `dvc status` "
                            "says why; nothing was recorded for Snakemake")
    _run("snakemake", "all", "--touch", "--forceall", "--cores", "1", capture=True)
    print("pulled: dvc status is clean and Snakemake has recorded every output; both engines have nothing to do")
