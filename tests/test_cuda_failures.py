"""A CUDA that fails (driver too old for the wheel, a bad CUDA_VISIBLE_DEVICES) gives a doctor row
with its fix and a one-line error from every command, never a traceback. No GPU here: the GPU
build is simulated by making Paddle say it has CUDA, and its device count raise as Paddle's C++
does (an OSError carrying the whole C++ report)."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import run

pytestmark = pytest.mark.faults

# What Paddle 3.3.1 raises from GetGPUDeviceCountImpl when the driver is older than the wheel's CUDA.
PADDLE_REPORT = (
    "\n\n--------------------------------------\nC++ Traceback (most recent call last):\n"
    "--------------------------------------\n0   phi::backends::gpu::GetGPUDeviceCount()\n\n"
    "----------------------\nError Message Summary:\n----------------------\n"
    "ExternalError: CUDA error(35), CUDA driver version is insufficient for CUDA runtime version. \n"
    "  [Hint: 'cudaErrorInsufficientDriver'. This indicates that the installed NVIDIA CUDA driver is older than "
    "the CUDA runtime library.] (at /paddle/paddle/phi/backends/gpu/cuda/cuda_info.cc:67)\n")
CAUSE = "ExternalError: CUDA error(35), CUDA driver version is insufficient for CUDA runtime version"
BROKEN_CUDA = ("from pipeline.hardware import paddle_setup\npaddle = paddle_setup.import_paddle()\n"
               "def count():\n    raise OSError(REPORT)\n"
               "paddle.is_compiled_with_cuda = lambda: True\n"
               "paddle.device.cuda.device_count = count\n")


@pytest.fixture
def broken_cuda(monkeypatch):
    from pipeline.hardware import paddle_setup

    paddle = paddle_setup.import_paddle()

    def count():
        raise OSError(PADDLE_REPORT)

    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", count)


def test_the_doctor_says_fail_with_the_driver_and_wheel_fix(broken_cuda, monkeypatch):
    from pipeline.tools import doctor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    rows, count = doctor.gpus({"device": "gpu", "amp": "fp32"})
    assert count == 0 and len(rows) == 1
    assert rows[0].result == "FAIL" and rows[0].found == f"CUDA failed: {CAUSE}"
    assert "nvidia-smi" in rows[0].fix and "packages/stable/cu118/" in rows[0].fix
    assert "CUDA_VISIBLE_DEVICES is '0,1'" in rows[0].fix


def test_choosing_the_device_is_one_line_with_the_fix(broken_cuda):
    from pipeline.hardware import device

    with pytest.raises(device.CudaError) as error:
        device.resolve("gpu")
    message = str(error.value)
    assert message.startswith(f"CUDA failed: {CAUSE}. Check `nvidia-smi`") and "\n" not in message


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_training_or_evaluation_ends_with_one_line(project, stage):
    """The real command (`python -m pipeline.<stage>`) on the ci profile with device=gpu."""
    script = (f"REPORT = {PADDLE_REPORT!r}\n" + BROKEN_CUDA
              + "import runpy, sys\nsys.argv = ['', 'alexnet-none-s42', '--set', 'profile=ci', '--set', 'device=gpu']\n"
              + f"runpy.run_module('pipeline.{stage}', run_name='__main__', alter_sys=True)\n")
    proc = run([sys.executable, "-c", script], cwd=project, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[-1]  # one line
    assert proc.stderr.startswith(f"error: CUDA failed: {CAUSE}. Check `nvidia-smi`")
    assert "Traceback" not in proc.stderr + proc.stdout
