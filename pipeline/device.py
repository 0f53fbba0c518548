"""Device and thread handling, in one place.

Paddle's CPU kernels use one thread unless OMP_NUM_THREADS is set before paddle is imported.
Snakemake sets it to the job's `threads`; under DVC (one stage at a time) we use every core.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

from pipeline import PipelineError


class DeviceError(PipelineError):
    """The requested device is not available; the message says how to choose another."""


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads() -> int:
    """Fix the CPU thread count; must run before paddle is imported."""
    requested = int(os.environ.get("OMP_NUM_THREADS") or 0) or available_cores()
    threads = max(1, min(requested, available_cores()))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def import_paddle():
    """Import paddle once threads are fixed, without its multi-thread banner or ccache warning.

    Paddle prints a warning to stderr whenever OMP_NUM_THREADS > 1; here that is intended.
    """
    configure_threads()
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import paddle
    # BatchNorm repeats this note for every layer in training mode; it tells nothing here.
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    return paddle


def gpu_count() -> int:
    import paddle

    return paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0


def select(setting: str) -> str:
    """Make `setting` (auto | cpu | gpu) Paddle's device and return "cpu" or "gpu"."""
    import paddle

    has_gpu = gpu_count() > 0
    if setting == "gpu" and not has_gpu:
        raise DeviceError(
            "no GPU found (this profile trains on a GPU; install paddlepaddle-gpu on a CUDA machine). "
            "To train on the CPU anyway, override the device: --config device=cpu (Snakemake) or -S device=cpu (DVC)"
        )
    device = "gpu" if setting == "gpu" or (setting == "auto" and has_gpu) else "cpu"
    paddle.set_device(device)
    return device


def describe(device: str) -> str:
    """A human-readable name, e.g. "GPU: NVIDIA A100" or "CPU (2 threads)"."""
    if device == "gpu":
        import paddle

        return f"GPU: {paddle.device.cuda.get_device_name()}"
    threads = os.environ.get("OMP_NUM_THREADS", "?")
    return f"CPU ({threads} thread{'' if threads == '1' else 's'})"


def wants_gpu(setting: str) -> bool:
    """Whether a job with this device setting will hold a GPU; cheap enough for DAG building."""
    return setting == "gpu" or (setting == "auto" and os.path.exists("/proc/driver/nvidia/gpus"))
