"""Data parallel: one training job on several devices (`devices_per_job` > 1).

The training command re-executes itself through Paddle's launcher (`python -m
paddle.distributed.launch`), which starts one worker process per device and tells each its rank
in PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM (read by `device.world`). On GPUs each worker holds
one GPU (NCCL); on the CPU the workers talk through gloo. Every helper here is a no-op on one
device, so the training loop calls them unconditionally.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.hardware import device, paddle_setup

paddle = paddle_setup.import_paddle()  # threads and allocator first
import paddle.distributed as dist  # noqa: E402

LAUNCH_FLAG_VARIABLES = ("PADDLE_DEVICES", "PADDLE_NPROC_PER_NODE", "PADDLE_LOG_DIR", "PADDLE_JOB_ID",
                         "PADDLE_MAX_RESTART", "PADDLE_LOG_LEVEL", "PADDLE_LOG_OVERWRITE")


def launch_command(count: int, dev: str, worker: list[str], log_dir: str | Path, job_id: str,
                   visible_gpus: str | None = None) -> list[str]:
    """The command that runs `worker` (a full argv) as `count` data-parallel processes.

    GPUs: `--devices` lists the first `count` GPUs by the labels the launcher matches against
    CUDA_VISIBLE_DEVICES (`visible_gpus`; "2,3" when that is set so, else 0..count-1); CPU:
    `--nproc_per_node` processes, which the CPU build joins through gloo. No restarts (a failed
    worker fails the job, which resumes from its last epoch when rerun); the launcher's own log
    folder (workerlog.<rank> per worker) is `log_dir`, not ./log.
    """
    if dev == "gpu":
        visible = [g.strip() for g in visible_gpus.split(",")] if visible_gpus and visible_gpus != "all" else []
        where = ["--devices", ",".join(visible[:count] or map(str, range(count)))]
    else:
        where = ["--nproc_per_node", str(count)]
    return [sys.executable, "-m", "paddle.distributed.launch", *where, "--log_dir", str(log_dir),
            "--job_id", job_id, "--max_restart", "0", "--log_level", "WARNING", "--log_overwrite", "true", *worker]


def _prctl():
    """libc's prctl, looked up before any fork: a forked child may only make plain calls."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(prctl=None) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a killed job leaves no orphans)."""
    with contextlib.suppress(Exception):
        (prctl or _prctl())(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def launch(count: int, dev: str, worker: list[str], log_dir: Path, job_id: str) -> None:
    """Run `worker` on `count` devices through Paddle's launcher; its output (rank 0's, as the
    launcher echoes it) goes to this process's stdout, so to the stage's log as well.

    Each worker runs with this process's OMP_NUM_THREADS. A worker's one-line `error: ...`
    becomes this process's error; any other failure names the worker logs.
    """
    log_dir = Path(log_dir)
    # The launcher lets these variables override the flags we give it (paddle's launch/context/args_envs.py).
    # OMP_NUM_THREADS is already each worker's share (pipeline/hardware/job.py).
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_FLAG_VARIABLES}
    env.update(PYTHONUNBUFFERED="1")
    cmd = launch_command(count, dev, worker, log_dir, job_id, os.environ.get("CUDA_VISIBLE_DEVICES"))
    prctl = _prctl()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: _die_with_parent(prctl))
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: stop the launcher, which stops its workers
            proc.terminate()
            proc.wait()
    if code != 0:
        raise device.DeviceError(worker_failure(log_dir, code))


def worker_failure(log_dir: Path, code: int) -> str:
    """One line for a failed launch: the first worker's `error: ...` line (rank 0 first), else where to look."""
    logs = sorted(Path(log_dir).glob("workerlog.*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    for log in logs:
        errors = re.findall(r"^error: (.*)$", log.read_text(errors="replace"), re.M)
        if errors:
            return errors[-1]
    return f"a training process failed (launcher exit code {code}); see {', '.join(map(str, logs)) or log_dir}"


def init_distributed(dev: str) -> tuple[int, int]:
    """In a launched worker: join the other workers (gloo on the CPU, NCCL on GPUs); (rank, world)."""
    rank, size = device.world()
    if size > 1:
        _die_with_parent()  # the launcher's workers live in their own sessions; end them with it
        if dev == "cpu":
            os.environ["PADDLE_DISTRI_BACKEND"] = "gloo"  # also on a GPU build asked to train on the CPU
        dist.init_parallel_env()
    return rank, size


def data_parallel(model):
    """`model` wrapped in paddle.DataParallel when several workers train it (parameters and
    buffers broadcast from rank 0, gradients averaged over workers in backward), else `model`."""
    return paddle.DataParallel(model) if device.launched_worker() else model


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums of `values` over all workers (the values themselves on one device)."""
    if not device.launched_worker():
        return list(values)
    total = paddle.to_tensor(np.asarray(values, np.float64))
    dist.all_reduce(total)
    return total.numpy().tolist()


def average_buffers(model) -> None:
    """Average BatchNorm running statistics over workers (each tracks its own shard's), so
    validation and checkpoints see one set; nothing to do on one device."""
    size = device.world()[1]
    if size == 1:
        return
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
            for buffer in (layer._mean, layer._variance):
                dist.all_reduce(buffer)
                buffer.set_value(buffer / size)


def gather(obj) -> list:
    """`obj` of every worker, in rank order ([obj] on one device)."""
    if not device.launched_worker():
        return [obj]
    gathered: list = []
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every worker (no-op on one device)."""
    if device.launched_worker():
        dist.barrier()
