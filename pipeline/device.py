"""Device and thread handling, in one place; also the multi-device (data parallel) plumbing.

Paddle's CPU kernels use one thread unless OMP_NUM_THREADS is set before paddle is imported.
Snakemake sets it to the job's `threads`; under DVC (one stage at a time) we use every core.

Data parallel (`devices_per_job` > 1): the training command re-executes itself through Paddle's
launcher (`python -m paddle.distributed.launch`), which starts one worker process per device and
tells each its rank in PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM. On GPUs each worker holds one
GPU (NCCL); on the CPU the workers talk through gloo.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

from pipeline import PipelineError


class DeviceError(PipelineError):
    """The requested device is not available; the message says how to choose another."""


# The one Paddle release the project pins, as a CPU build (PyPI: pip install -e ".[cpu]") or a
# GPU build from Paddle's own index, one per CUDA version (README, "The paper profile").
PADDLE_VERSION = "3.3.1"
PADDLE_GPU_INDEX = "https://www.paddlepaddle.org.cn/packages/stable/cu126/"
CPU_BUILD, GPU_BUILD = "paddlepaddle", "paddlepaddle-gpu"
INSTALL_GPU = (f"pip install {GPU_BUILD}=={PADDLE_VERSION} -i {PADDLE_GPU_INDEX} "
               "(cu118 or cu129 for other CUDA versions)")
INSTALL_CPU = 'pip install -e ".[cpu]"'


def paddle_builds() -> dict[str, str]:
    """The Paddle distributions installed, name -> version. Both install the same paddle/ folder,
    and pip treats them as unrelated, so having both means one overwrote the other's files."""
    from importlib import metadata

    found = {}
    for name in (CPU_BUILD, GPU_BUILD):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def check_paddle_build() -> None:
    """Exactly one Paddle build must be installed; else one line says what to remove and install."""
    builds = paddle_builds()
    if not builds:
        raise DeviceError(f"PaddlePaddle is not installed: {INSTALL_CPU} on a CPU, or on a CUDA machine {INSTALL_GPU}")
    if len(builds) > 1:
        raise DeviceError(
            f"both {CPU_BUILD} {builds[CPU_BUILD]} and {GPU_BUILD} {builds[GPU_BUILD]} are installed, over one "
            f"paddle/ folder: pip uninstall -y {CPU_BUILD} {GPU_BUILD}, then on a CUDA machine {INSTALL_GPU}, "
            f"or on a CPU {INSTALL_CPU}")


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads() -> int:
    """Fix the CPU thread count; must run before paddle is imported."""
    requested = int(os.environ.get("OMP_NUM_THREADS") or 0) or available_cores()
    threads = max(1, min(requested, available_cores()))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def training_cpus(settings: dict) -> int:
    """The CPUs a training job declares (Snakemake's `threads`): per device, its `train_threads`,
    and at least one for the training process plus one for each loader worker."""
    return settings["devices_per_job"] * max(settings["train_threads"], 1 + settings["num_workers"])


def training_threads(allotted: int, devices: int, loader_workers: int) -> int:
    """Paddle threads of each training process, so that it and its loader workers (one thread each)
    fit in the `allotted` CPUs: a device's share less one per worker, at least one."""
    return max(1, allotted // devices - loader_workers)


def one_thread_per_loader_worker() -> None:
    """Loader workers augment one image at a time with OpenCV, each on the one CPU the job
    declares for it (training_cpus); OpenCV's own pool would add a thread per core to every
    worker. Set in the training process before the workers fork, which inherit it: a forked
    worker that starts or resizes OpenCV's pool itself can hang."""
    import cv2

    cv2.setNumThreads(1)


def keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    Paddle's CPU allocator is plain malloc/free, and glibc serves each multi-megabyte tensor
    with fresh pages (mmap, or a heap it trims on free), so every full-size temporary of a
    training step pays thousands of page faults; an element-wise op on a 12.6 MB tensor runs
    about 4x faster without them (`python -m pipeline bench` shows the effect on training).
    The cost: the process keeps its peak heap. A no-op where glibc is absent (macOS, musl).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    mallopt(m_mmap_max, 0)  # big blocks come from the heap too, where freed memory is reused
    mallopt(m_trim_threshold, 2**31 - 1)  # and the heap is never trimmed


def import_paddle():
    """Import paddle once threads and the allocator are set, without its multi-thread banner or
    ccache warning.

    Paddle prints a warning to stderr whenever OMP_NUM_THREADS > 1; here that is intended.
    """
    configure_threads()
    keep_freed_memory()
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import paddle
    # BatchNorm repeats this note for every layer in training mode; it tells nothing here.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    return paddle


def gpu_count() -> int:
    import paddle

    return paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0


def select(setting: str, count: int = 1) -> str:
    """Make `setting` (auto | cpu | gpu) Paddle's device and return "cpu" or "gpu".

    `count`: devices the job trains on (devices_per_job). In a launched worker, "gpu" is the
    worker's own GPU (the launcher's FLAGS_selected_gpus).
    """
    import paddle

    device = resolve(setting, count)
    paddle.set_device(device)
    return device


def resolve(setting: str, count: int = 1) -> str:
    """"cpu" or "gpu" for `setting` (auto | cpu | gpu), checking that a GPU job finds `count`
    GPUs; unlike `select`, it leaves Paddle's device alone (a launching process holds none)."""
    import paddle

    gpus = gpu_count()
    if setting == "gpu" and not paddle.is_compiled_with_cuda():
        raise DeviceError(
            f"this profile trains on a GPU, but the CPU build of Paddle is installed: pip uninstall -y {CPU_BUILD}, "
            f"then {INSTALL_GPU}. To train on the CPU anyway: --config device=cpu (Snakemake) or -S device=cpu (DVC)")
    if setting == "gpu" and not gpus:
        raise DeviceError(
            "no GPU found (this profile trains on a GPU; the GPU build of Paddle is installed but sees no device: "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES). "
            "To train on the CPU anyway, override the device: --config device=cpu (Snakemake) or -S device=cpu (DVC)"
        )
    device = "gpu" if setting == "gpu" or (setting == "auto" and gpus) else "cpu"
    if device == "gpu" and gpus < count:
        raise DeviceError(
            f"devices_per_job={count} needs {count} GPUs, found {gpus}; "
            f"lower it: --config devices_per_job={gpus} (Snakemake) or -S devices_per_job={gpus} (DVC)"
        )
    return device


def describe(device: str, count: int = 1) -> str:
    """A human-readable name, e.g. "GPU: NVIDIA A100", "CPU (2 threads)", "2 x GPU: NVIDIA A100"."""
    if device == "gpu":
        import paddle

        name = f"GPU: {paddle.device.cuda.get_device_name()}"
    else:
        threads = os.environ.get("OMP_NUM_THREADS", "?")
        name = f"CPU ({threads} thread{'' if threads == '1' else 's'})"
    return name if count == 1 else f"{count} x {name}"


def wants_gpu(setting: str) -> bool:
    """Whether a job with this device setting will hold a GPU; cheap enough for DAG building."""
    return setting == "gpu" or (setting == "auto" and os.path.exists("/proc/driver/nvidia/gpus"))


def gpus_per_job(settings: dict, devices: int | None = None) -> int:
    """GPUs a job holds (Snakemake's `resources: gpu=`): `devices` (default: the profile's
    devices_per_job, what a training job uses) when the job runs on GPUs, else 0."""
    return (settings["devices_per_job"] if devices is None else devices) if wants_gpu(settings["device"]) else 0


# ---- Data parallel: one training job on several devices ------------------------------------------

def world() -> tuple[int, int]:
    """(rank, number of processes) of this training process: (0, 1) unless Paddle's launcher started it."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get("PADDLE_TRAINERS_NUM", 1))


def launched_worker() -> bool:
    """Whether this process is one of several workers started by paddle.distributed.launch."""
    return world()[1] > 1


LAUNCH_FLAG_VARIABLES = ("PADDLE_DEVICES", "PADDLE_NPROC_PER_NODE", "PADDLE_LOG_DIR", "PADDLE_JOB_ID",
                         "PADDLE_MAX_RESTART", "PADDLE_LOG_LEVEL", "PADDLE_LOG_OVERWRITE")


def launch_command(count: int, device: str, worker: list[str], log_dir: str | Path, job_id: str,
                   visible_gpus: str | None = None) -> list[str]:
    """The command that runs `worker` (a full argv) as `count` data-parallel processes.

    GPUs: `--devices` lists the first `count` GPUs by the labels the launcher matches against
    CUDA_VISIBLE_DEVICES (`visible_gpus`; "2,3" when that is set so, else 0..count-1); CPU:
    `--nproc_per_node` processes, which the CPU build joins through gloo. No restarts (a failed
    worker fails the job, which resumes from its last epoch when rerun); the launcher's own log
    folder (workerlog.<rank> per worker) is `log_dir`, not ./log.
    """
    if device == "gpu":
        visible = [g.strip() for g in visible_gpus.split(",")] if visible_gpus and visible_gpus != "all" else []
        where = ["--devices", ",".join(visible[:count] or map(str, range(count)))]
    else:
        where = ["--nproc_per_node", str(count)]
    return [sys.executable, "-m", "paddle.distributed.launch", *where, "--log_dir", str(log_dir),
            "--job_id", job_id, "--max_restart", "0", "--log_level", "WARNING", "--log_overwrite", "true", *worker]


def _prctl():
    """libc's prctl, looked up before any fork: a forked child may only make plain calls."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(prctl=None) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a killed job leaves no orphans)."""
    with contextlib.suppress(Exception):
        (prctl or _prctl())(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def launch(count: int, device: str, worker: list[str], log_dir: Path, job_id: str) -> None:
    """Run `worker` on `count` devices through Paddle's launcher; its output (rank 0's, as the
    launcher echoes it) goes to this process's stdout, so to the stage's log as well.

    Each worker runs with this process's OMP_NUM_THREADS. A worker's one-line `error: ...`
    becomes this process's error; any other failure names the worker logs.
    """
    log_dir = Path(log_dir)
    # The launcher lets these variables override the flags we give it (paddle's launch/context/args_envs.py).
    # OMP_NUM_THREADS is already each worker's share (pipeline/__main__.py).
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_FLAG_VARIABLES}
    env.update(PYTHONUNBUFFERED="1")
    cmd = launch_command(count, device, worker, log_dir, job_id, os.environ.get("CUDA_VISIBLE_DEVICES"))
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
        raise DeviceError(worker_failure(log_dir, code))


def worker_failure(log_dir: Path, code: int) -> str:
    """One line for a failed launch: the first worker's `error: ...` line (rank 0 first), else where to look."""
    logs = sorted(Path(log_dir).glob("workerlog.*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    for log in logs:
        errors = re.findall(r"^error: (.*)$", log.read_text(errors="replace"), re.M)
        if errors:
            return errors[-1]
    return f"a training process failed (launcher exit code {code}); see {', '.join(map(str, logs)) or log_dir}"


def init_distributed(device: str) -> tuple[int, int]:
    """In a launched worker: join the other workers (gloo on the CPU, NCCL on GPUs); (rank, world)."""
    rank, size = world()
    if size > 1:
        import paddle.distributed as dist

        _die_with_parent()  # the launcher's workers live in their own sessions; end them with it
        if device == "cpu":
            os.environ["PADDLE_DISTRI_BACKEND"] = "gloo"  # also on a GPU build asked to train on the CPU
        dist.init_parallel_env()
    return rank, size


def data_parallel(model):
    """`model` wrapped in paddle.DataParallel when several workers train it (parameters and
    buffers broadcast from rank 0, gradients averaged over workers in backward), else `model`."""
    import paddle

    return paddle.DataParallel(model) if launched_worker() else model


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sums of `values` over all workers (the values themselves on one device)."""
    if not launched_worker():
        return list(values)
    import numpy as np
    import paddle
    import paddle.distributed as dist

    total = paddle.to_tensor(np.asarray(values, np.float64))
    dist.all_reduce(total)
    return total.numpy().tolist()


def average_buffers(model) -> None:
    """Average BatchNorm running statistics over workers (each tracks its own shard's), so
    validation and checkpoints see one set; nothing to do on one device."""
    size = world()[1]
    if size == 1:
        return
    import paddle
    import paddle.distributed as dist

    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
            for buffer in (layer._mean, layer._variance):
                dist.all_reduce(buffer)
                buffer.set_value(buffer / size)


def gather(obj) -> list:
    """`obj` of every worker, in rank order ([obj] on one device)."""
    if not launched_worker():
        return [obj]
    import paddle.distributed as dist

    gathered: list = []
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every worker (no-op on one device)."""
    if launched_worker():
        import paddle.distributed as dist

        dist.barrier()
