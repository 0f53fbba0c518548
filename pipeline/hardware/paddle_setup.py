"""Which Paddle, and how it starts: the installed build (exactly one of the CPU and GPU builds),
and what must be set before `import paddle`: its CPU threads and the allocator's behaviour.

Paddle's CPU kernels use one thread unless OMP_NUM_THREADS is set before paddle is imported.
Snakemake sets it to the job's `threads`; under DVC (one stage at a time) we use every core. No
paddle import at module level: the Snakefile reads it to build the DAG.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import warnings

from pipeline import PipelineError


class PaddleBuildError(PipelineError):
    """Not exactly one Paddle build is installed; the message says what to remove and install."""

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
        raise PaddleBuildError(f"PaddlePaddle is not installed: {INSTALL_CPU} on a CPU, "
                               f"or on a CUDA machine {INSTALL_GPU}")
    if len(builds) > 1:
        raise PaddleBuildError(
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
