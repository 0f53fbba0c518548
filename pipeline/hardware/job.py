"""A Paddle stage's job, set up before Paddle is imported.

The training and evaluation stages call `prepare` at their top, before `import paddle`: a GPU build
fixes its devices from CUDA_VISIBLE_DEVICES when paddle is imported, and the CPU kernels their
thread count from OMP_NUM_THREADS.
"""

from __future__ import annotations

import os

from pipeline import PipelineError
from pipeline.core import stage
from pipeline.dag import config
from pipeline.hardware import device, gpu_locks, paddle_setup


def prepare(training: bool) -> None:
    """Check the Paddle build; on GPUs take device ids no other job holds (gpu_locks.py): a
    training's devices_per_job (a data-parallel training's workers inherit them), an evaluation's
    one; give a training process its threads beside its loader workers; import Paddle. A launched
    data-parallel worker inherits all of it. Bad input ends the command with one line."""
    try:
        paddle_setup.check_paddle_build()
        if not device.launched_worker():
            settings = config.run_settings(stage.load_params("run"), stage.command_line("run").target)
            # With the CPU build installed, the stage itself says which build to install.
            if device.wants_gpu(settings["device"]) and paddle_setup.GPU_BUILD in paddle_setup.paddle_builds():
                gpu_locks.claim(settings["devices_per_job"] if training else 1)
            if training:
                allotted = int(os.environ.get("OMP_NUM_THREADS") or paddle_setup.available_cores())
                os.environ["OMP_NUM_THREADS"] = str(paddle_setup.training_threads(
                    allotted, settings["devices_per_job"], settings["num_workers"]))
        paddle_setup.import_paddle()
    except PipelineError as exc:
        stage.fail(exc)
