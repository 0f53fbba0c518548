"""Which device a job computes on: the GPUs a profile asks for and a job holds, checked before
anything runs; CUDA failures as one line; the number format convolutions and matmuls compute in;
and which data-parallel worker this process is (the plumbing between workers: distributed.py).
No paddle import at module level: the Snakefile reads it to build the DAG.
"""

from __future__ import annotations

import os

from pipeline import PipelineError
from pipeline.hardware.paddle_setup import CPU_BUILD, GPU_BUILD, INSTALL_GPU, PADDLE_INDEX, PADDLE_VERSION


class DeviceError(PipelineError):
    """The requested device is not available; the message says how to choose another."""


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
