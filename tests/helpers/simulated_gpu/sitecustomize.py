"""Python runs this at start-up in every process that has this folder on PYTHONPATH: jobs that a
real SLURM gives GPUs then run through the GPU code path on the CPU build of Paddle.

Only what needs the hardware is simulated: Paddle tells the pipeline it is the GPU build and counts the ids in
CUDA_VISIBLE_DEVICES, and "gpu" computes on the CPU. Everything before it is real: SLURM's
allocation, its CUDA_VISIBLE_DEVICES, the job's claim of device ids (pipeline/hardware/gpu_locks.py).
Each process that sets a GPU as its device appends what it was given and when to
$SIMULATED_GPU_LOG (one JSON line), and its end time when it exits.
"""

import atexit
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time


def _record(**fields) -> None:
    with open(os.environ["SIMULATED_GPU_LOG"], "a") as log:
        log.write(json.dumps({"pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"), **fields}) + "\n")


def _patch_paddle(paddle) -> None:
    set_device = paddle.set_device

    def on_cpu(where: str):
        if str(where).startswith("gpu") and not getattr(on_cpu, "recorded", False):
            on_cpu.recorded = True
            _record(start=time.time(), argv=sys.argv[1:], visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
                    slurm_gpus=os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS"))
            atexit.register(lambda: _record(end=time.time()))
        return set_device("cpu" if str(where).startswith("gpu") else where)

    visible = lambda: [i for i in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if i]  # noqa: E731
    paddle.set_device = on_cpu
    # Paddle asks itself too (paddle.seed seeds every CUDA device): only the pipeline hears "yes".
    paddle.is_compiled_with_cuda = lambda: sys._getframe(1).f_globals.get("__name__", "").startswith("pipeline")
    paddle.device.cuda.device_count = lambda: len(visible())
    paddle.device.cuda.get_device_name = lambda *args: "simulated GPU"
    paddle.device.cuda.get_device_capability = lambda *args: (7, 0)  # computes float32 as float32


def _patch_paddle_setup(paddle_setup) -> None:
    from importlib import metadata

    paddle_setup.paddle_builds = lambda: {paddle_setup.GPU_BUILD: metadata.version(paddle_setup.CPU_BUILD)}


PATCHES = {"paddle": _patch_paddle, "pipeline.hardware.paddle_setup": _patch_paddle_setup}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            PATCHES[name](module)

        spec.loader.exec_module = exec_and_patch
        return spec


if os.environ.get("SIMULATED_GPU_LOG"):
    sys.meta_path.insert(0, _PatchAfterImport())
