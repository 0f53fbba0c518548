"""Which GPUs a job runs on: each job claims device ids no running job holds.

Snakemake's `gpu` resource only counts; it sets no CUDA_VISIBLE_DEVICES, so four trainings
started with `--resources gpu=4` would all run on GPU 0. Before Paddle starts, a training or
evaluation that runs on GPUs therefore takes as many of the visible ids as it needs (the user's
CUDA_VISIBLE_DEVICES, else every GPU the driver lists) through an exclusive lock file per id, and
makes them its CUDA_VISIBLE_DEVICES. The kernel drops a lock when its process ends, however it
ends, so a crashed or killed job frees its devices. A job that finds too few free waits for them.

Inside a SLURM allocation the visible ids are the allocation's own (SLURM sets
CUDA_VISIBLE_DEVICES), so the locks are the allocation's too: jobs of one allocation (`snakemake
--resources gpu=4` inside `salloc --gpus=4`) share its devices out, and allocations on one node
never wait for each other. A job submitted alone (the slurm profile) takes all it was given.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from pipeline import PipelineError

LOCK_DIR = Path(os.environ.get("NA_REPRO_GPU_LOCKS", "~/.cache/na-repro/gpu-locks")).expanduser()
_held: list = []  # the open lock files of this process's claim, kept for its whole life


def visible_ids() -> list[str]:
    """The GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip() not in ("", "all"):
        return [i.strip() for i in listed.split(",") if i.strip()]
    driver = Path("/proc/driver/nvidia/gpus")  # one entry per GPU, readable without starting CUDA
    return [str(i) for i in range(len(list(driver.iterdir())))] if driver.is_dir() else []


def lock_folder() -> Path:
    """Where this job's locks live: one folder per machine, and per SLURM allocation within it,
    whose ids SLURM numbers from 0 again (a cluster's nodes may share the home directory)."""
    folder = LOCK_DIR / socket.gethostname()
    if "SLURM_JOB_ID" in os.environ and "CUDA_VISIBLE_DEVICES" in os.environ:
        folder /= f"slurm-job-{os.environ['SLURM_JOB_ID']}"
    return folder


def claim(count: int, poll_seconds: float = 1.0) -> list[str]:
    """Hold `count` GPU ids that no other job holds and make them this process's
    CUDA_VISIBLE_DEVICES (so Paddle's device 0 is the first of them); waits while too few are free."""
    ids = visible_ids()
    if len(ids) < count:
        raise PipelineError(f"this job needs {count} GPU(s) and {len(ids)} are visible ({','.join(ids) or 'none'}); "
                            "check nvidia-smi and CUDA_VISIBLE_DEVICES, or lower devices_per_job")
    folder = lock_folder()
    folder.mkdir(parents=True, exist_ok=True)
    said = False
    while True:
        taken = []
        for gpu in ids:
            lock = open(folder / f"gpu{gpu}.lock", "a")  # noqa: SIM115 (held open for the process's life)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            taken.append((gpu, lock))
            if len(taken) == count:
                _held.extend(lock for _, lock in taken)
                chosen = [g for g, _ in taken]
                os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
                return chosen
        for _, lock in taken:  # not enough: give back what was taken, so two jobs cannot block each other
            lock.close()
        if not said:
            print(f"waiting for {count} free GPU(s) of {','.join(ids)}: running jobs hold the others", flush=True)
            said = True
        time.sleep(poll_seconds)
