"""Data parallel (`devices_per_job` > 1): settings, the launch command, the global batch, and real
two-process CPU training through Paddle's launcher (gloo), against one process on the whole batch."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.dag import config
from pipeline.hardware import device, paddle_setup
from tests.conftest import ROOT, assert_nothing_lost, layout, run

paddle_setup.import_paddle()  # threads fixed and the import banner kept quiet, as the stages do
from pipeline.hardware import distributed  # noqa: E402

RUN = "alexnet-none-s42"


# ---- settings -------------------------------------------------------------------------------------

@pytest.fixture
def in_project(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_one_device_per_job_unless_overridden(in_project):
    params = config.load()
    for profile in ("paper", "demo", "ci"):
        assert config.run_settings({**params, "profile": profile}, RUN)["devices_per_job"] == 1
    assert config.run_settings(config.load(["devices_per_job=2"]), RUN)["devices_per_job"] == 2


@pytest.mark.faults
@pytest.mark.parametrize("override, expected", [
    ("devices_per_job=0", "devices_per_job: 0 is less than the minimum of 1"),
    ("devices_per_job=1.5", "devices_per_job: 1.5 is not of type 'integer'"),
    ("devices_per_job=two", "devices_per_job: 'two' is not of type 'integer'"),
])
def test_devices_per_job_must_be_a_positive_integer(in_project, override, expected):
    with pytest.raises(config.ConfigError) as err:
        config.load([override])
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.faults
def test_a_batch_that_does_not_split_over_the_devices_says_how_to_fix_it(in_project):
    params = config.load(["devices_per_job=3"])  # the demo's batch of 64
    with pytest.raises(config.ConfigError) as err:
        config.run_settings(params, RUN)
    message = str(err.value)
    assert message.startswith("batch_size 64 does not split over devices_per_job 3") and "\n" not in message
    assert "--config batch_size=66" in message and "-S batch_size=66" in message
    assert config.run_settings(config.load(["devices_per_job=3", "batch_size=66"]), RUN)["batch_size"] == 66


# ---- the launch command -----------------------------------------------------------------------------

WORKER = [sys.executable, "-u", "-m", "pipeline.train", RUN, "--set=devices_per_job=2"]
LAUNCH = [sys.executable, "-m", "paddle.distributed.launch"]
COMMON = ["--log_dir", "logs/train/x.launch", "--job_id", RUN, "--max_restart", "0", "--log_level", "WARNING",
          "--log_overwrite", "true"]


def test_cpu_launch_starts_processes():
    assert distributed.launch_command(2, "cpu", WORKER, "logs/train/x.launch", RUN) == [
        *LAUNCH, "--nproc_per_node", "2", *COMMON, *WORKER]


@pytest.mark.parametrize("visible, devices", [(None, "0,1"), ("all", "0,1"), ("2,3,5", "2,3"), ("6, 7", "6,7")])
def test_gpu_launch_names_the_visible_gpus(visible, devices):
    # The launcher matches --devices against CUDA_VISIBLE_DEVICES' labels, not positions.
    assert distributed.launch_command(2, "gpu", WORKER, "logs/train/x.launch", RUN, visible) == [
        *LAUNCH, "--devices", devices, *COMMON, *WORKER]


def test_training_jobs_ask_snakemake_for_their_gpus(monkeypatch):
    settings = {"device": "gpu", "devices_per_job": 2}
    assert device.gpus_per_job(settings) == 2 and device.gpus_per_job(settings, devices=1) == 1
    assert device.gpus_per_job({**settings, "device": "cpu"}) == 0
    monkeypatch.setattr(device.os.path, "exists", lambda path: False)  # no NVIDIA driver
    assert device.gpus_per_job({**settings, "device": "auto"}) == 0


def test_paper_dry_run_reserves_devices_per_job_gpus_per_training(tmp_path):
    from tests.conftest import copy_project, snakemake_jobs

    project = copy_project(tmp_path / "project")
    jobs = snakemake_jobs(project, "--config", "profile=paper", "devices_per_job=2", "seeds=[42]")
    train = [(c, j) for c, j in jobs.items() if j["rule"] == "train"]
    assert len(train) == 6 and all("gpu=2" in j["resources"] for _, j in train)
    assert all("--set devices_per_job=2" in c and c.startswith("python -m pipeline.train ") for c, _ in train)
    assert all("gpu=1" in j["resources"] for j in jobs.values() if j["rule"] == "evaluate")  # one GPU is enough
    bad = run(["snakemake", "-n", "all", "--config", "devices_per_job=3"], cwd=project, check=False)
    assert bad.returncode != 0 and "error: batch_size 64 does not split over devices_per_job 3" in bad.stderr


# ---- the global batch -------------------------------------------------------------------------------

def test_workers_split_each_global_batch_into_disjoint_shares():
    from pipeline.images.batches import GlobalBatchSampler

    one = GlobalBatchSampler(100, 12, seed=42)
    shares = [GlobalBatchSampler(100, 12, seed=42, rank=r, world=3) for r in range(3)]
    for epoch in (1, 2):
        for sampler in (one, *shares):
            sampler.set_epoch(epoch)
        single = list(one)
        assert len(single) == len(one) == 8 and all(len(b) == 12 for b in single)  # 4 left over: dropped
        per_worker = [list(s) for s in shares]
        assert all(len(batches) == 8 and all(len(b) == 4 for b in batches) for batches in per_worker)
        for k, batch in enumerate(single):
            assert [i for w in per_worker for i in w[k]] == batch  # shares, in rank order, are the batch
        assert len({i for b in single for i in b}) == 96
    one.set_epoch(1)
    first = list(one)
    one.set_epoch(2)
    assert list(one) != first
    assert list(GlobalBatchSampler(100, 12, seed=43)) != first  # the run's seed shuffles, not the epoch alone


# ---- real workers on the CPU (gloo) -----------------------------------------------------------------

STEP_SCRIPT = textwrap.dedent('''
    """Training steps on a fixed batch of 8: alone, or as one of the launcher's workers.

    Alone, "whole" takes each step on all 8 images (the training stage's `training_step`), "halves"
    accumulates the gradients of the two halves of 4 as two workers would compute them.
    """
    import contextlib, sys, time
    import numpy as np
    from pipeline.hardware import device, paddle_setup
    paddle = paddle_setup.import_paddle()
    from pipeline.hardware import distributed
    from pipeline.models import build_model
    from pipeline.train import smoothed_cross_entropy, training_step

    arch, attention, size, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    opt, reference, out = sys.argv[5:]
    rank, world = distributed.init_distributed("cpu")
    paddle.set_device("cpu")
    paddle.seed(7 + rank)  # other workers start elsewhere: DataParallel must hand them rank 0's weights
    model = build_model(arch, attention, 10, size)
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.p = 0.0  # no random masks
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    if arch == "resnet18":
        # BatchNorm in training mode normalises by each worker's own images; on running statistics
        # (eval mode) the forward pass does not depend on how the batch is split. Fresh statistics
        # (0, 1) let activations grow to ~1e6, so first track the batch's (rank 0's reach everyone).
        with paddle.no_grad():
            for _ in range(30):
                model(paddle.to_tensor(x))
        model.eval()
    net = distributed.data_parallel(model)
    initial = {k: v.numpy() for k, v in model.state_dict().items()}  # after rank 0's weights were handed out
    if opt == "sgd":  # the update is linear in the gradient: parameters compare gradients
        scheduler = paddle.optimizer.lr.CosineAnnealingDecay(0.05, T_max=steps + 1)
        optimizer = paddle.optimizer.SGD(learning_rate=scheduler, parameters=model.parameters())
    else:  # the training stage's
        scheduler = paddle.optimizer.lr.CosineAnnealingDecay(1e-3, T_max=steps)
        optimizer = paddle.optimizer.Adam(learning_rate=scheduler, parameters=model.parameters(), weight_decay=1e-5)
    autocast, scaler = contextlib.nullcontext, None  # float32, as on any CPU
    share = slice(rank * 8 // world, (rank + 1) * 8 // world)
    losses, seconds = [], []
    for _ in range(steps):
        start = time.perf_counter()
        if world == 1 and reference == "halves":
            total = 0.0
            for half in (slice(0, 4), slice(4, 8)):
                loss = smoothed_cross_entropy(model(paddle.to_tensor(x[half])), paddle.to_tensor(y[half]), 0.1) / 2
                loss.backward()
                total += float(loss)
            optimizer.step()
            optimizer.clear_grad()
            losses.append(total)
        else:
            _, loss = training_step(net, optimizer, paddle.to_tensor(x[share]), paddle.to_tensor(y[share]), 0.1,
                                    autocast, scaler)
            total, count = distributed.all_sum([float(loss) * (8 // world), 8 // world])
            losses.append(total / count)
        scheduler.step()
        seconds.append(time.perf_counter() - start)
    if rank == 0:
        np.savez(out, losses=np.array(losses), seconds=np.array(seconds),
                 **{"start:" + k: v for k, v in initial.items()},
                 **{"param:" + k: v.numpy() for k, v in model.state_dict().items()})
''')


def train_steps(tmp_path, arch, attention, size, steps, workers, optimizer="sgd", reference="whole"):
    script, out = tmp_path / "steps.py", tmp_path / f"{arch}-{optimizer}-{workers}-{reference}.npz"
    script.write_text(STEP_SCRIPT)
    worker = [sys.executable, "-u", str(script), arch, attention, str(size), str(steps), optimizer, reference, str(out)]
    cmd = worker if workers == 1 else distributed.launch_command(workers, "cpu", worker, tmp_path / "launch", "steps")
    run(cmd, cwd=ROOT, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    return dict(np.load(out))


@pytest.mark.slow
@pytest.mark.parametrize("arch, attention, size, reference", [
    ("alexnet", "none", 64, "whole"),     # training mode, dropout off
    ("resnet18", "gate", 32, "whole"),    # BatchNorm on running statistics (eval mode)
    # The post's NA is rounding noise by design: its gradient moves by ~1e-3 (relative) between a
    # batch of 8 and two of 4 even in one process, so two workers are held to the two halves.
    ("alexnet", "na-blog", 64, "halves"),
])
def test_two_workers_on_halves_train_as_one_process_on_the_whole_batch(tmp_path, arch, attention, size, reference):
    """Two SGD steps through the training stage's `training_step`: the averaged gradient of two
    halves is the gradient of the whole batch, so the parameters agree to float rounding.

    SGD rather than the stage's Adam: Adam's first update is about lr * sign(gradient), which turns
    rounding-level differences of near-zero gradients into differences of up to 2 * lr; what data
    parallel must get right is the gradient (the Adam step is checked below).
    """
    one = train_steps(tmp_path, arch, attention, size, steps=2, workers=1, reference=reference)
    two = train_steps(tmp_path, arch, attention, size, steps=2, workers=2)
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    names = [k.removeprefix("param:") for k in one if k.startswith("param:")]
    assert names and set(names) == {k.removeprefix("param:") for k in two if k.startswith("param:")}
    moved = 0
    for name in names:
        # both start from the same weights (the other worker got rank 0's)...
        assert np.array_equal(two[f"start:{name}"], one[f"start:{name}"]), name
        # ...and take the same steps, to float rounding of the gradient
        one_step, two_step = (r[f"param:{name}"] - r[f"start:{name}"] for r in (one, two))
        scale = np.abs(one_step).max()
        assert np.abs(two_step - one_step).max() <= 1e-5 * scale, (name, scale)
        moved += scale > 0
    assert moved > len(names) // 2  # it did train


@pytest.mark.slow
def test_two_workers_take_the_first_adam_step_as_one_process(tmp_path):
    """The stage's Adam on the global batch: one step gives the same loss and, but for sign flips of
    near-zero gradients (each bounded by 2 * lr), the same weights."""
    one = train_steps(tmp_path, "alexnet", "none", 64, steps=1, workers=1, optimizer="adam")
    two = train_steps(tmp_path, "alexnet", "none", 64, steps=1, workers=2, optimizer="adam")
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-6)
    diffs = np.concatenate([np.abs(two[k] - one[k]).ravel() for k in one if k.startswith("param:")])
    assert diffs.max() <= 2e-3 and (diffs > 1e-5).mean() < 1e-4


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.e2e
def test_two_cpu_workers_train_a_run_and_write_its_outputs_once(project):
    ci = ["--set", "profile=ci"]
    run(["python", "-m", "pipeline.data", "alexnet", *ci], cwd=project)
    run(["python", "-m", "pipeline.train", RUN, *ci], cwd=project)
    one = layout(project, *ci)
    single = {"steps": (project / one.train_steps(RUN)).read_text(),
              "summary": (project / one.train_summary(RUN)).read_text()}

    two = [*ci, "--set", "devices_per_job=2"]
    where = layout(project, *two)  # another configuration, beside the one-device run's
    proc = run(["python", "-m", "pipeline.train", RUN, *two], cwd=project)
    log = (project / where.log("train", RUN)).read_text()
    assert "data parallel on 2 CPU workers through paddle.distributed.launch" in log
    assert log.count(f"{RUN} epoch 1/1: lr") == 1 and proc.stdout.count(f"{RUN} epoch 1/1: lr") == 1  # rank 0's
    workers = project / where.log("train", RUN).with_suffix(".launch")
    assert sorted(p.name for p in workers.glob("workerlog.*")) == ["workerlog.0", "workerlog.1"]
    assert "epoch 1/1: lr" not in (workers / "workerlog.1").read_text()  # rank 1 neither validates nor reports
    assert not (project / "log").exists()  # the launcher's own folder stays under logs/

    summary = json.loads((project / where.train_summary(RUN)).read_text())
    assert summary["device"] == "2 x CPU (1 thread)"
    before = json.loads(single["summary"])
    # the same global batches: same steps, same schedule, same number of images seen
    assert (summary["steps"], summary["train_images"], summary["epochs"]) == (before["steps"], 256, 1)
    steps = rows(project / where.train_steps(RUN))
    assert [r["step"] for r in steps] == [r["step"] for r in csv.DictReader(single["steps"].splitlines())]
    assert 0 < float(steps[0]["loss"]) < 10 and len(rows(project / where.train_epochs(RUN))) == 1
    checkpoints = sorted(p.name for p in (project / where.checkpoints(RUN)).iterdir())
    assert checkpoints == ["best.pdopt", "best.pdparams", "final.pdopt", "final.pdparams"]
    assert set(summary["checkpoint_sha256"]) == set(checkpoints)
    assert not (project / where.resume_dir(RUN)).exists()
    # no stray or half-written files beside the outputs (every write is temp file + rename, on rank 0)
    assert sorted(p.name for p in (project / where.train_logs / RUN).iterdir()) == [
        "epochs.csv", "steps.csv", "summary.json"]


@pytest.mark.slow
@pytest.mark.faults
def test_a_failing_worker_fails_the_job_with_its_one_line_error(project):
    ci = ["--set", "profile=ci", "--set", "train_subset=64", "--set", "batch_size=16", "--set", "devices_per_job=2"]
    run(["python", "-m", "pipeline.data", "alexnet", *ci], cwd=project)
    proc = run(["python", "-m", "pipeline.train", RUN, *ci, "--set", "lr=.inf"], cwd=project, check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {RUN}: loss became") and "at step" in last
    where = layout(project, *ci, "lr=.inf")
    assert_nothing_lost(project / where.checkpoints(RUN), project / where.train_logs / RUN)


def workers_of(project) -> list[int]:
    """Training processes still running in `project` (the launcher's workers have their own sessions)."""
    import os

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"pipeline\0train" in (proc / "cmdline").read_bytes() \
                    and os.path.realpath(proc / "cwd") == str(project.resolve()):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.faults
def test_killed_two_worker_training_leaves_no_worker_and_resumes_to_the_same_result(project):
    """SIGKILL the job's process group mid-run (as a power loss or `kill -9` of the job would):
    the workers follow, and a rerun continues to the weights of an uninterrupted two-worker run."""
    import os
    import signal
    import subprocess
    import time

    from tests.conftest import command_env

    args = ["python", "-m", "pipeline.train", RUN, "--set", "profile=ci", "--set", "epochs=3",
            "--set", "train_subset=512", "--set", "batch_size=32", "--set", "devices_per_job=2"]
    run(["python", "-m", "pipeline.data", "alexnet", "--set", "profile=ci"], cwd=project)
    run(args, cwd=project)
    where = layout(project, *args)
    final = project / where.checkpoints(RUN) / "final.pdparams"
    paddle = paddle_setup.import_paddle()
    reference = (rows(project / where.train_epochs(RUN)), paddle.load(str(final)))
    for output in (project / where.checkpoints(RUN), project / where.train_logs / RUN):
        shutil.rmtree(output)

    proc = subprocess.Popen(args, cwd=project, env=command_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    state = project / where.resume_dir(RUN) / "state.pdckpt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # into the second epoch
    os.killpg(proc.pid, signal.SIGKILL)  # the command and the launcher, not the workers' own sessions
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    deadline = time.time() + 30  # orphaned workers would go on to finish: assert_nothing_lost catches that
    while workers_of(project) and time.time() < deadline:
        time.sleep(0.2)
    assert workers_of(project) == []
    assert_nothing_lost(project / where.checkpoints(RUN), project / where.train_summary(RUN))

    resumed = run(args, cwd=project)
    assert "resuming after epoch" in resumed.stdout
    epochs = rows(project / where.train_epochs(RUN))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in epochs] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in reference[0]]
    weights = paddle.load(str(final))
    assert all(np.array_equal(weights[k].numpy(), reference[1][k].numpy()) for k in weights)
