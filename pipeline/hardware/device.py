"""Devices and threads, in one place: what must be settled before paddle is imported.

Paddle's CPU kernels use one thread unless OMP_NUM_THREADS is set before paddle is imported.
Snakemake sets it to the job's `threads`; under DVC (one stage at a time) we use every core.
This module also checks which Paddle build is installed, picks the device a profile asks for,
and tells a data-parallel worker its rank (the plumbing between workers: pipeline/hardware/distributed.py).
No paddle import at module level: the Snakefile reads it to build the DAG.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import warnings

from pipeline import PipelineError


class DeviceError(PipelineError):
    """The requested device is not available; the message says how to choose another."""


# The one Paddle release the project pins, as a CPU build (PyPI: pip install -e ".[cpu]") or a
# GPU build from Paddle's own index, one per CUDA version (docs/paper-and-gpus.md).
PADDLE_VERSION = "3.3.1"
PADDLE_INDEX = "https://www.paddlepaddle.org.cn/packages/stable/{cuda}/"
PADDLE_GPU_INDEX = PADDLE_INDEX.format(cuda="cu126")
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


def keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    Paddle's CPU allocator is plain malloc/free, and glibc serves each multi-megabyte tensor
    with fresh pages (mmap, or a heap it trims on free), so every full-size temporary of a
    training step pays thousands of page faults, which cost more than the op itself
    (`python -m pipeline bench` shows the effect on training).
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


class CudaError(DeviceError):
    """CUDA itself failed (driver, wheel or CUDA_VISIBLE_DEVICES): `cause` is CUDA's own line, `fix` what to do."""

    def __init__(self, cause: str, fix: str):
        super().__init__(f"CUDA failed: {cause}. {fix}")
        self.cause, self.fix = cause, fix


def cuda_failure(error: Exception) -> CudaError:
    """One line for a failed CUDA call: Paddle raises its whole C++ report (an OSError for a CUDA
    error), whose one telling line is the CUDA error itself."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in lines if "CUDA error" in line or "cudaError" in line), lines[-1] if lines else "")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return CudaError(cause[:200].rstrip(". "), (
        "Check `nvidia-smi`: it must list the GPU, with a driver that supports the CUDA version of the Paddle "
        f"wheel (else install one built for an older CUDA: pip uninstall -y {GPU_BUILD}, then pip install "
        f"{GPU_BUILD}=={PADDLE_VERSION} -i {PADDLE_INDEX.format(cuda='cu118')})"
        + (f"; CUDA_VISIBLE_DEVICES is {visible!r}: unset it or list valid ids" if visible is not None else "")))


def gpu_count() -> int:
    """The GPUs Paddle sees (0 with the CPU build); a CUDA failure is a CudaError, not a traceback:
    `import paddle` only warns when the driver is too old for the wheel, counting the GPUs raises."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return 0
    try:
        return paddle.device.cuda.device_count()
    except (OSError, RuntimeError) as error:
        raise cuda_failure(error) from None


def float32_format(dev: str) -> str:
    """The number format `dev` computes float32 convolutions and matmuls in: "tf32" on a GPU of
    compute capability 8.0 or later while Paddle lets cuDNN or cuBLAS use TF32 (its default, which
    NVIDIA_TF32_OVERRIDE=0 turns off in both libraries), else "fp32"."""
    if dev != "gpu" or os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
        return "fp32"
    import paddle
    from paddle.base import core

    try:
        major, _ = paddle.device.cuda.get_device_capability()
    except (OSError, RuntimeError) as error:
        raise cuda_failure(error) from None
    return "tf32" if major >= 8 and (core.get_cudnn_switch() or core.get_cublas_switch()) else "fp32"


def number_format(dev: str, precision: str) -> str:
    """The format a model's convolutions and matmuls compute in on `dev` when it computes in
    `precision` (fp32 | bf16 | fp16, what autocast actually ran: nothing on the CPU)."""
    return float32_format(dev) if precision == "fp32" else precision


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


# ---- Which process this is: set by Paddle's launcher before paddle is imported --------------------

def world() -> tuple[int, int]:
    """(rank, number of processes) of this training process: (0, 1) unless Paddle's launcher started it
    (pipeline/hardware/distributed.py)."""
    return int(os.environ.get("PADDLE_TRAINER_ID", 0)), int(os.environ.get("PADDLE_TRAINERS_NUM", 1))


def launched_worker() -> bool:
    """Whether this process is one of several workers started by paddle.distributed.launch."""
    return world()[1] > 1
