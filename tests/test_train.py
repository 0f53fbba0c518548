"""Training: the post's loss and schedule, repeatable CPU runs, and the paper profile's GPU guard."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest

from pipeline.hardware import device, paddle_setup
from pipeline.images import transforms
from tests.conftest import assert_nothing_lost, layout, run

paddle = paddle_setup.import_paddle()

from pipeline.train import schedule_length, smoothed_cross_entropy  # noqa: E402


def test_cosine_schedule_spans_the_posts_t_max():
    assert schedule_length(50_000, 128, 50) == 19_500


def test_label_smoothing_matches_the_formula():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 10)).astype(np.float32), rng.integers(0, 10, 6)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = np.mean(0.9 * -log_p[np.arange(6), labels] + 0.1 * -log_p.mean(1))
    got = float(smoothed_cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), 0.1))
    assert got == pytest.approx(expected, rel=1e-5)


def test_thread_count_never_exceeds_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "512")
    assert paddle_setup.configure_threads() == paddle_setup.available_cores()


def epoch_rows(project, where, run_name):
    with open(project / where.train_epochs(run_name)) as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_cpu_training_is_repeatable(project):
    ci = ["--set", "profile=ci", "--set", "epochs=2", "--set", "batch_size=16"]
    where = layout(project, *ci)
    run(["python", "-m", "pipeline.data", "alexnet", *ci], cwd=project)
    results = []
    for _ in range(2):
        run(["python", "-m", "pipeline.train", "alexnet-na-blog-s42", *ci], cwd=project)
        weights = paddle.load(str(project / where.checkpoints("alexnet-na-blog-s42") / "final.pdparams"))
        results.append((epoch_rows(project, where, "alexnet-na-blog-s42"), {k: v.numpy() for k, v in weights.items()}))
    (rows_a, weights_a), (rows_b, weights_b) = results
    assert rows_a == rows_b and len(rows_a) == 2
    assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a)
    steps = (project / where.train_steps("alexnet-na-blog-s42")).read_text().splitlines()
    assert steps[0] == "step,epoch,loss" and steps[1].startswith("0,1,") and steps[2].startswith("10,1,")


@pytest.mark.skipif(device.gpu_count() > 0, reason="this machine has a GPU")
@pytest.mark.faults
def test_paper_profile_refuses_to_train_without_gpu(project):
    proc = run(["python", "-m", "pipeline.train", "alexnet-none-s42", "--set", "profile=paper"],
               cwd=project, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: this profile trains on a GPU, but the CPU build of Paddle is "
                                          "installed: pip uninstall -y paddlepaddle, then pip install "
                                          "paddlepaddle-gpu==3.3.1 -i https://www.paddlepaddle.org.cn/packages/")
    assert "device=cpu" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (project / "runs").exists()


@pytest.mark.slow
@pytest.mark.faults
def test_killed_training_resumes_to_the_same_result(project):
    """SIGKILL a real training process mid-run, rerun it, and get what an uninterrupted run gives."""
    import signal
    import subprocess
    import time

    from tests.conftest import command_env

    name = "alexnet-na-blog-s42"
    args = ["python", "-m", "pipeline.train", name, "--set", "profile=ci", "--set", "epochs=3",
            "--set", "batch_size=16", "--set", "train_subset=512"]
    where = layout(project, *args)
    run(["python", "-m", "pipeline.data", "alexnet", "--set", "profile=ci"], cwd=project)
    run(args, cwd=project)
    final = project / where.checkpoints(name) / "final.pdparams"
    reference = (epoch_rows(project, where, name), paddle.load(str(final)))
    assert not (project / where.resume_dir(name)).exists()  # cleaned up after a complete run
    for output in (project / where.checkpoints(name), project / where.train_logs / name):
        shutil.rmtree(output)

    proc = subprocess.Popen(args, cwd=project, env=command_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = project / where.resume_dir(name) / "state.pdckpt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    # no output looks complete
    assert_nothing_lost(project / where.checkpoints(name), project / where.train_summary(name))

    resumed = run(args, cwd=project)
    assert "resuming after epoch" in resumed.stdout
    rows, weights = epoch_rows(project, where, name), paddle.load(str(final))
    assert rows == reference[0]
    assert all(np.array_equal(weights[k].numpy(), reference[1][k].numpy()) for k in weights)


def test_reading_losses_back_once_per_log_every_steps_gives_the_per_step_figures():
    """The training loop reads the device once per log_every steps; the epoch's loss sum, logged
    rows and correct count equal what reading every step gave, to the bit."""
    from pipeline.models import build_model
    from pipeline.train import read_losses, training_step

    rng = np.random.default_rng(0)
    batches = [(paddle.to_tensor(rng.normal(size=(8, 3, 32, 32)).astype("float32")),
                paddle.to_tensor(rng.integers(0, 10, 8))) for _ in range(7)]

    def run_steps(per_step: bool):
        paddle.seed(0)
        model = build_model("resnet18", "na-blog", 10, 32)
        optimizer = paddle.optimizer.Adam(parameters=model.parameters())
        total, rows, correct, window = 0.0, [], paddle.zeros([], "int64"), []
        for step, (x, y) in enumerate(batches):
            logits, loss = training_step(model, optimizer, x, y, 0.1, paddle.amp.auto_cast, None)
            if per_step:  # as the loop did before
                total += float(loss) * len(y)
                rows += [{"step": step, "loss": float(loss)}] if step % 3 == 0 else []
                correct += int((logits.argmax(axis=-1) == y).sum())
            else:
                window.append((step, loss.detach(), len(y)))
                correct += (logits.argmax(axis=-1) == y).sum()
                if (step + 1) % 3 == 0 or step == len(batches) - 1:
                    part, logged = read_losses(window, 3, 1, "test")
                    total, rows, window = total + part, rows + logged, []
        return total, rows, int(correct)

    assert run_steps(per_step=False) == run_steps(per_step=True)


def test_validation_on_prepared_batches_gives_the_per_batch_figures():
    from pipeline.images.batches import validation_batches
    from pipeline.models import build_model
    from pipeline.train import validate

    rng = np.random.default_rng(1)
    val_x, val_y = rng.integers(0, 256, (70, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 70)
    model = build_model("alexnet", "none", 10, 64)
    model.eval()
    total, correct = 0.0, 0
    with paddle.no_grad():  # per batch, read back each time, as it was
        for x, y in transforms.test_batches(val_x, val_y, 64, 32):
            logits, y = model(paddle.to_tensor(x)), paddle.to_tensor(y)
            total += float(smoothed_cross_entropy(logits, y, 0.1)) * len(y)
            correct += int((logits.argmax(axis=-1) == y).sum())
    assert validate(model, validation_batches(val_x, val_y, 64, 32), 0.1) == (total / 70, correct / 70)


@pytest.mark.faults
def test_a_state_saved_with_another_number_of_visible_devices_starts_over(tmp_path, capsys):
    from pipeline.core.checkpoints import load_state, rng_state, save_state

    model = paddle.nn.Linear(2, 2)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(1e-3, T_max=10)
    rng = rng_state()
    rng["paddle"] = rng["paddle"] * 2  # as saved on a machine that saw two GPUs
    state = tmp_path / "state.pdckpt"
    save_state(state, model, optimizer, scheduler, None, {"epoch": 1}, {"lr": 1e-3}, [rng])
    assert load_state(state, model, optimizer, scheduler, None, {"lr": 1e-3}) is None
    assert "saved with 2 visible device(s), 1 now; starting over" in capsys.readouterr().out
    save_state(state, model, optimizer, scheduler, None, {"epoch": 1}, {"lr": 1e-3}, [rng_state()])
    assert load_state(state, model, optimizer, scheduler, None, {"lr": 1e-3}) == {"epoch": 1}


def test_a_resumed_fp16_run_keeps_its_loss_scale(tmp_path):
    """The real GradScaler, on a place it takes for a GPU (tests/helpers/number_formats.py): three
    overflowing steps halve 2^16 three times and one good step counts towards the next increase;
    the saved state brings all of it back, so a resumed run does not skip its first steps again."""
    from pipeline import train
    from pipeline.core.checkpoints import load_state, rng_state, save_state
    from tests.helpers.number_formats import gpu_in_format

    with gpu_in_format("fp16"):
        model = paddle.nn.Linear(4, 3)
        optimizer = paddle.optimizer.Adam(parameters=model.parameters())
        scheduler = paddle.optimizer.lr.CosineAnnealingDecay(1e-3, T_max=10)
        autocast, scaler = train.mixed_precision("fp16", "gpu")
        x, y = paddle.randn([2, 4]), paddle.to_tensor([0, 2])
        for factor in (1e30, 1e30, 1e30, 1.0):  # the first three overflow
            with autocast():
                loss = train.smoothed_cross_entropy(model(x) * factor, y, 0.1)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            train.update_loss_scale(scaler)
            optimizer.clear_grad()
        saved = scaler.state_dict()
        assert float(saved["scale"][0]) == 2.0**13 and saved["incr_count"] == 1
        state = tmp_path / "state.pdckpt"
        save_state(state, model, optimizer, scheduler, scaler, {"epoch": 1}, {"lr": 1e-3}, [rng_state()])
        _, resumed = train.mixed_precision("fp16", "gpu")
        assert float(resumed.state_dict()["scale"][0]) == 2.0**16
        assert load_state(state, model, optimizer, scheduler, resumed, {"lr": 1e-3}) == {"epoch": 1}
    restored = resumed.state_dict()
    assert float(restored["scale"][0]) == 2.0**13 and restored["incr_count"] == 1 and restored["decr_count"] == 0


def test_a_job_alone_keeps_its_bar_and_side_by_side_prints_only_its_epochs(project):
    from pipeline.core import logs

    ci = ["--set", "profile=ci", "--set", "train_subset=64", "--set", "batch_size=16"]
    run(["python", "-m", "pipeline.data", "alexnet", *ci], cwd=project)
    alone = run(["python", "-m", "pipeline.train", "alexnet-none-s42", *ci], cwd=project)
    assert "batch/s" in alone.stderr
    side = run(["python", "-m", "pipeline.train", "alexnet-gate-s42", *ci], cwd=project,
               env={logs.SIDE_BY_SIDE: "1"})
    assert "batch/s" not in side.stdout + side.stderr and "alexnet-gate-s42 epoch 1/1: lr " in side.stdout
    assert "batch/s" in (project / layout(project, *ci).log("train", "alexnet-gate-s42")).read_text()


@pytest.mark.faults
def test_evaluate_refuses_a_checkpoint_changed_after_training(project):
    ci = ["--set", "profile=ci", "--set", "train_subset=64", "--set", "batch_size=16"]
    run(["python", "-m", "pipeline.data", "alexnet", *ci], cwd=project)
    run(["python", "-m", "pipeline.train", "alexnet-none-s42", *ci], cwd=project)
    run(["python", "-m", "pipeline.evaluate", "alexnet-none-s42", *ci], cwd=project)
    with open(project / layout(project, *ci).checkpoints("alexnet-none-s42") / "best.pdparams", "ab") as f:
        f.write(b"\0")
    proc = run(["python", "-m", "pipeline.evaluate", "alexnet-none-s42", *ci], cwd=project, check=False)
    assert proc.returncode == 1
    assert "does not match the sha256" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.faults
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_epoch(project):
    ci = ["--set", "profile=ci", "--set", "train_subset=64", "--set", "batch_size=16"]
    run(["python", "-m", "pipeline.data", "alexnet", *ci], cwd=project)
    where = layout(project, *ci, "lr=.inf")
    # An infinite lr makes every weight non-finite after the first step, whatever the data order
    # (a merely huge one can saturate into a finite loss for some batches).
    proc = run(["python", "-m", "pipeline.train", "alexnet-none-s42", *ci, "--set", "lr=.inf"], cwd=project,
               check=False)
    assert proc.returncode == 1
    assert re.search(r"error: alexnet-none-s42: loss became (nan|inf) at step \d+ \(epoch 1\)", proc.stderr)
    run_name = "alexnet-none-s42"
    assert_nothing_lost(project / where.checkpoints(run_name), project / where.train_logs / run_name)


@pytest.mark.faults
def test_training_without_prepared_data_says_what_to_run(project):
    proc = run(["python", "-m", "pipeline.train", "alexnet-none-s42"], cwd=project, check=False)
    assert proc.returncode == 1 and "data/prepared/demo/alexnet.npz is missing; run the data stage first" in proc.stderr


GPU_SETTINGS = {"image_size": 32, "batch_size": 8, "num_workers": 2, "prefetch_batches": 3, "pin_memory": True,
                "augment_on_device": False, "seed": 0}


@pytest.mark.parametrize("amp, dev, enabled, dtype, scaled", [
    ("fp16", "gpu", True, "float16", True),    # fp16 needs loss scaling
    ("bf16", "gpu", True, "bfloat16", False),  # bf16 has float32's range
    ("fp32", "gpu", False, None, False),
    ("bf16", "cpu", False, None, False),       # Paddle's autocast does nothing on the CPU
])
def test_mixed_precision_switch_is_wired(amp, dev, enabled, dtype, scaled, capsys):
    from pipeline.models import build_model
    from pipeline.train import mixed_precision, training_step

    autocast, scaler = mixed_precision(amp, dev)
    assert autocast.keywords["enable"] is enabled and (scaler is not None) is scaled
    if enabled:
        assert autocast.keywords["dtype"] == dtype
    if dev == "cpu" and amp != "fp32":
        assert "applies on a GPU only" in capsys.readouterr().out
    # The same step the training loop takes runs here (on the CPU autocast is a no-op, but the
    # loss-scaling path is real) and updates the weights.
    model = build_model("resnet18", "gate", 10, 32)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    before = model.fc.weight.numpy().copy()
    _, loss = training_step(model, optimizer, paddle.randn([4, 3, 32, 32]), paddle.to_tensor([1, 2, 3, 4]), 0.1,
                            autocast, scaler)
    assert np.isfinite(float(loss)) and not np.array_equal(before, model.fc.weight.numpy())


def test_loader_settings_reach_the_dataloader():
    from pipeline.images.batches import training_batches

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32)
    loader = training_batches(x, y, GPU_SETTINGS, "cpu")
    assert isinstance(loader, paddle.io.DataLoader)
    assert (loader.num_workers, loader.prefetch_factor, loader._persistent_workers) == (2, 3, True)
    assert loader.pin_memory is False  # nothing to pin for on the CPU
    assert training_batches(x, y, GPU_SETTINGS, "gpu").pin_memory is True
    batch, labels = next(iter(loader))  # two real worker processes
    assert batch.shape == [8, 3, 32, 32] and labels.shape == [8]


def test_each_loader_worker_runs_one_thread_of_augmentation():
    """A training job declares one CPU per loader worker (paddle_setup.training_cpus); OpenCV's pool
    would give every worker a thread per core of the machine besides."""
    import os
    from pathlib import Path

    import cv2

    from pipeline.images.batches import training_batches

    before = cv2.getNumThreads()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 48)
    try:
        batches = iter(training_batches(x, y, {**GPU_SETTINGS, "image_size": 128}, "cpu"))
        next(batches)  # the workers have augmented at the paper's size, where OpenCV would go parallel
        assert cv2.getNumThreads() == 1  # what the forked workers inherit
        children = {int(pid) for task in os.listdir("/proc/self/task")
                    for pid in Path(f"/proc/self/task/{task}/children").read_text().split()}
        threads = [len(os.listdir(f"/proc/{pid}/task")) for pid in children]
        assert len(threads) >= 2 and max(threads) <= 2, threads  # its own and the one handing batches over
    finally:
        cv2.setNumThreads(before)


@pytest.mark.parametrize("workers", [0, 2])
def test_runs_with_one_seed_see_the_same_batches_whatever_the_attention(workers):
    """What pairing runs by seed rests on: the data order and the augmentation draws depend on the
    seed alone, not on the variant, even one whose layers draw their initial weights (se)."""
    import random

    from pipeline.images.batches import training_batches
    from pipeline.models import build_model

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32)
    settings = {**GPU_SETTINGS, "num_workers": workers, "seed": 42}
    seen = {}
    for attention in ("none", "na-blog", "se"):
        random.seed(42), np.random.seed(42), paddle.seed(42)  # as train.main seeds, then builds, then loads
        build_model("alexnet", attention, 10, 64)
        batches = training_batches(x, y, settings, "cpu")
        batches.batch_sampler.set_epoch(1)
        seen[attention] = [b.numpy() for b, _ in batches][:2]
    for attention in ("na-blog", "se"):
        for mine, baseline in zip(seen[attention], seen["none"], strict=True):
            np.testing.assert_array_equal(mine, baseline)


def test_augment_on_device_switch_is_wired():
    from pipeline.images import transforms
    from pipeline.images.batches import training_batches

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 32)
    on_device = {**GPU_SETTINGS, "augment_on_device": True}
    assert isinstance(training_batches(x, y, on_device, "cpu"), paddle.io.DataLoader)  # off on the CPU
    batches = training_batches(x, y, on_device, "gpu")  # runs on the CPU here, as paddle's device is
    assert isinstance(batches, transforms.DeviceBatches) and len(batches) == 4
    batch, labels = next(iter(batches))
    assert batch.shape == [8, 3, 32, 32] and batch.dtype == paddle.float32 and labels.shape == [8]
