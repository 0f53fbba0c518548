"""Stand-ins for SLURM's commands, so that Snakemake's real SLURM plugin submits a whole plan here.

`sbatch` records its arguments, runs the job script as an allocation would (the plugin's job step,
which calls `srun`), and prints a job id; `srun` records its arguments and runs nothing; `sacct`
reports every recorded job as completed. (The log's variable does not start with SLURM_: the job step
drops those from the environment.) The rest answer nothing, as on a cluster without
accounting. Only the scheduler is simulated: the command lines are the plugin's own.
"""

from __future__ import annotations

import json
from pathlib import Path

SBATCH = '''\
import fcntl, json, os, subprocess, sys
log = os.environ["STAND_IN_SCHEDULER_LOG"]
with open(log, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # the plugin submits from two threads
    jobid = str(1000 + sum(1 for _ in open(log)))
    f.write(json.dumps({"cmd": "sbatch", "jobid": jobid, "argv": sys.argv[1:]}) + "\\n")
script = next(a[len("--wrap="):] for a in sys.argv if a.startswith("--wrap="))
subprocess.run(script, shell=True, env={**os.environ, "SLURM_JOB_ID": jobid},
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(jobid)
'''
SRUN = '''\
import json, os, sys
with open(os.environ["STAND_IN_SCHEDULER_LOG"], "a") as f:
    f.write(json.dumps({"cmd": "srun", "jobid": os.environ["SLURM_JOB_ID"], "argv": sys.argv[1:]}) + "\\n")
'''
SACCT = '''\
import json, os
for line in open(os.environ["STAND_IN_SCHEDULER_LOG"]):
    if json.loads(line)["cmd"] == "sbatch":
        print(json.loads(line)["jobid"] + "|COMPLETED")
'''


def install(bin_dir: Path, python: str) -> None:
    """Write the stand-ins into `bin_dir`, to be put first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {"sbatch": SBATCH, "srun": SRUN, "sacct": SACCT}
    for name in ("sinfo", "squeue", "scontrol", "sacctmgr", "sshare"):
        scripts[name] = ""
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!{python}\n{body}")
        path.chmod(0o755)


def submissions(log: Path) -> dict[str, dict[str, list[str]]]:
    """Per job (the plugin's `--comment`, e.g. rule_train_wildcards_alexnet-none-s42): the sbatch
    arguments without the job script, and the job step's srun arguments."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    steps = {r["jobid"]: r["argv"] for r in records if r["cmd"] == "srun"}
    jobs = {}
    for r in records:
        if r["cmd"] == "sbatch":
            sbatch = [a for a in r["argv"] if not a.startswith("--wrap=")]
            jobs[sbatch[sbatch.index("--comment") + 1]] = {"sbatch": sbatch, "srun": steps.get(r["jobid"], [])}
    return jobs
