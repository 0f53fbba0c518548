"""`python -m pipeline doctor`, run for real on this CPU machine: the CPU checks run and pass, the
GPU checks say why they did not run, and a profile this machine cannot serve fails with its fix."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import copy_project, run

pytestmark = pytest.mark.slow

ROW = re.compile(r"^(\S.*?)\s{2,}(ok|warn|FAIL|not run)\s+(.*)$", re.M)


def doctor(project, *options: str, check: bool = True):
    proc = run(["python", "-m", "pipeline", "doctor", *options], cwd=project, check=check, timeout=600)
    return proc, {name: (result, found) for name, result, found in ROW.findall(proc.stdout)}


@pytest.fixture(scope="module")
def ci_project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("doctor") / "project", profile="ci")


def test_doctor_runs_every_cpu_check_and_says_which_gpu_checks_it_could_not_run(ci_project):
    from pipeline.models import ARCHS, ATTENTIONS

    # two loader workers and two data-parallel processes, so that those checks run on the CPU too
    proc, rows = doctor(ci_project, "--set", "num_workers=2", "--set", "devices_per_job=2")
    assert rows["Paddle build"] == ("ok", "paddlepaddle 3.3.1 (CPU build)")
    assert rows["CUDA and cuDNN"] == ("not run", "the CPU build of Paddle has no CUDA")
    assert rows["GPUs"][0] == "not run" and rows["GPU predictor"] == ("not run", "no GPU")
    for arch in ARCHS:
        for attention in ATTENTIONS:  # every variant, not only the matrix's
            result, found = rows[f"step {arch} + {attention}"]
            assert result == "ok" and "against a GPU: not run (no GPU)" in found, (arch, attention)
        for attention in ("none", "na-blog"):  # the matrix's, which the evaluation will run
            result, found = rows[f"predictor {arch} + {attention}"]
            assert result == "ok" and found.startswith("paddle-inference-onednn: logits within"), found
    assert rows["loader workers"][0] == "ok" and rows["loader workers"][1].startswith("2 workers in shared memory")
    assert "px on Place(cpu)," in rows["loader workers"][1]
    assert rows["data parallel"] == ("ok", "2 CPU workers, one step, the same weights after it")
    assert rows["C++ compiler"][0] == "ok" and "fused kernels in" in rows["C++ compiler"][1]
    assert re.search(r"^\d+ ok, 0 warn, 0 FAIL, 3 not run in \d+ s$", proc.stdout, re.M), proc.stdout


@pytest.mark.faults
def test_doctor_fails_with_one_fix_when_the_profile_needs_the_gpu_build(ci_project):
    proc, rows = doctor(ci_project, "--set", "device=gpu", check=False)
    assert proc.returncode == 1
    assert rows["Paddle build"] == ("FAIL", "paddlepaddle 3.3.1 (CPU build), but the profile trains on a GPU")
    fix = re.search(r"^\s+fix: (.*)$", proc.stdout, re.M).group(1)
    assert fix.startswith("pip uninstall -y paddlepaddle, then pip install paddlepaddle-gpu==3.3.1 -i https://")
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 check(s) failed")
    assert rows["step alexnet + na-blog"][0] == "ok"  # the other checks still ran


def test_dockers_default_shared_memory_is_too_small_for_the_paper_loader():
    from pipeline.dag import config
    from pipeline.tools import doctor
    s = config.run_settings(config.load(["profile=paper"]), "alexnet-none-s42")
    # 4 workers x 2 prefetched batches x 128 images x 3 x 128 x 128 float32
    assert doctor.shared_memory_needed(s) == 4 * 2 * 128 * 3 * 128 * 128 * 4
    row = doctor.shared_memory_row(s, 64 * 2**20)
    assert row.result == "FAIL" and "64 MB free" in row.found and "192 MB" in row.found
    assert "--shm-size" in row.fix
    assert doctor.shared_memory_row(s, 2**30) is None


def test_the_step_comparison_sees_a_changed_model():
    """The GPU step check's own code, with the CPU on both sides: identical steps agree exactly,
    and one changed weight is caught. tests/test_number_formats.py runs it against emulated GPUs."""
    from pipeline.hardware import paddle_setup
    from pipeline.models import tolerances
    from pipeline.tools import doctor
    paddle_setup.import_paddle()
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, doctor.CLASSES, 4)
    reference = doctor.forward_backward("resnet18", "na-official", 32, "cpu", "fp32", None, batch, labels)
    again = doctor.forward_backward("resnet18", "na-official", 32, "cpu", "fp32", reference.start, batch, labels)
    assert np.array_equal(reference.logits, again.logits)
    assert all(np.array_equal(reference.grads[k], again.grads[k]) for k in reference.grads)
    changed = {k: v + 0.05 if k.endswith("fc.weight") else v for k, v in reference.start.items()}
    other = doctor.forward_backward("resnet18", "na-official", 32, "cpu", "fp32", changed, batch, labels)
    difference = np.abs(other.logits - reference.logits).max() / tolerances.logit_scale(reference.logits)
    assert difference > tolerances.relative_bound("tf32", "na-official")
    lr = doctor.step_size("resnet18", "na-official", 32, reference, batch)
    after = doctor.logits_after_step("resnet18", "na-official", 32, "cpu", "fp32", reference.start, reference.grads,
                                     lr, batch)
    moved = np.abs(after - reference.logits).max() / tolerances.logit_scale(reference.logits)
    assert moved == pytest.approx(doctor.STEP_MOVES_LOGITS, rel=0.3)  # the step shows the gradients at that scale
    # autocast does nothing on the CPU, as on a GPU without bfloat16: the row says what ran
    wide = rng.standard_normal((4, 3, 64, 64)).astype(np.float32)
    assert doctor.forward_backward("alexnet", "none", 64, "cpu", "bf16", None, wide, labels).precision == "fp32"


def test_the_loader_check_delivers_where_training_does(monkeypatch):
    """The earlier checks leave Paddle on the CPU; on a GPU machine the loader check must first take
    training's device (device.select, as the training stage calls it), so that its batches go through
    page-locked memory to the GPU. No GPU here: device.select is watched, and the CPU stands in."""
    from pipeline.dag import config
    from pipeline.hardware import device, paddle_setup
    from pipeline.tools import doctor
    paddle = paddle_setup.import_paddle()
    selected = []
    monkeypatch.setattr(device, "select", lambda setting, count=1: (selected.append(setting), paddle.set_device("cpu")))
    s = {**config.run_settings(config.load(["profile=ci"]), "alexnet-none-s42"), "device": "gpu", "num_workers": 1}
    row = doctor.loader(s, "gpu")
    assert selected == ["gpu"]
    assert row.result == "ok" and "on Place(cpu)" in row.found
