"""`python -m pipeline bench`: the speed of every part that matters, measured side by side.

Writes reports/bench/bench.json (headline numbers at the top level, so they can be tracked)
and reports/bench/bench.md; the next report build shows the table in its appendix. Every
figure is a median over `--repeats` timings taken after a warm-up, with the compared cases
interleaved so that drift on a shared machine hits them alike; every ratio is computed from
medians of this one run. Everything runs on the CPU, GPU machines included.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from pipeline.analysis import bench_tables
from pipeline.core import atomic
from pipeline.dag import paths
from pipeline.hardware import device, paddle_setup
from pipeline.images import transforms
from pipeline.models import ATTENTIONS

# (arch, image size): the demo's sizes and the paper's
TRAINING = (("alexnet", 64), ("alexnet", 128), ("resnet18", 16), ("resnet18", 128))
DATA_SIZES = (128, 64, 32)  # output sizes from 32 px sources (CIFAR, the demo's digits)
THREAD_WORKLOADS = (("alexnet", 128), ("resnet18", 32))
NA_OVERHEAD_WORKLOAD = ("alexnet", 128)  # the headline na_overhead; timed 3x as often, its ratios are small


def _median_rate(seconds: list[float], items: int) -> float:
    return items / statistics.median(seconds)


def _interleaved(cases: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument callable, round-robin over `repeats` rounds."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    seconds = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def data_path(repeats: int, images_per_call: int) -> list[dict]:
    """Training-augmentation img/s on one core: the post's chain against ours."""
    import cv2

    cv2.setNumThreads(1)  # per core: the loader's workers are single processes
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (images_per_call, 32, 32, 3), dtype=np.uint8)
    labels = np.zeros(images_per_call, np.int64)
    rows = []
    for size in DATA_SIZES:
        blog, ours = transforms.blog_train_transform(size), transforms.TrainDataset(source, labels, size)
        # the loop's transforms are bound as defaults (the closures only run inside this iteration)
        seconds = _interleaved({
            "blog": lambda blog=blog: [blog(im) for im in source],
            "ours": lambda ours=ours: [ours[i] for i in range(len(source))],
        }, repeats)
        blog_rate, ours_rate = (_median_rate(seconds[k], images_per_call) for k in ("blog", "ours"))
        rows.append({"source_px": 32, "size": size, "blog_img_s": round(blog_rate), "ours_img_s": round(ours_rate),
                     "ratio": round(ours_rate / blog_rate, 2)})
    return rows


def _training_step(model, batch: int, size: int):
    """One training step of the training stage's own code on a fixed random batch, as a callable."""
    import paddle

    from pipeline.train import training_step

    x = paddle.randn([batch, 3, size, size])
    y = paddle.randint(0, 10, [batch])
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    model.train()

    def step():
        _, loss = training_step(model, optimizer, x, y, 0.1, contextlib.nullcontext, None)
        float(loss)  # waits for the device
    return step


def training(repeats: int, batch: int) -> list[dict]:
    """Training img/s per (arch, size, attention). overhead: the median over rounds of the step
    time over the baseline's in the same round, - 1; pairing neighbouring timings cancels the
    drift of a shared machine, which moves whole runs."""
    from pipeline.models import build_model

    rows = []
    for arch, size in TRAINING:
        steps = {a: _training_step(build_model(arch, a, 10, size), batch, size) for a in ATTENTIONS}
        seconds = _interleaved(steps, 3 * repeats if (arch, size) == NA_OVERHEAD_WORKLOAD else repeats)
        for attention in ATTENTIONS:
            step = statistics.median(seconds[attention])
            ratio = statistics.median(t / b for t, b in zip(seconds[attention], seconds["none"], strict=True))
            rows.append({"arch": arch, "size": size, "attention": attention, "batch": batch,
                         "step_ms": round(step * 1000, 1), "img_s": round(batch / step, 1),
                         "overhead": round(ratio - 1, 4)})
    return rows


def host_device(repeats: int, batch: int, val_images: int) -> dict:
    """What training waits for besides its kernels, on the CPU. Ten AlexNet training steps at the
    demo's 64 px read back every step (as training once did: float(loss) and the correct count)
    against once (as now, per log_every = 10 steps); the steps are short so that a read back's
    cost would show. And one epoch's validation of `val_images` images at the paper's 128 px,
    resized and normalised again (as once, every epoch) against batches prepared once per run.
    On the CPU a read back costs little, since the kernels have run by the time it asks; on a GPU
    it stalls the host every step."""
    import numpy as np
    import paddle

    from pipeline.images.batches import validation_batches
    from pipeline.models import build_model
    from pipeline.train import read_losses, training_step, validate

    step_size, val_size, steps = 64, 128, 10
    model = build_model("alexnet", "none", 10, step_size)
    optimizer = paddle.optimizer.Adam(parameters=model.parameters())
    x, y = paddle.randn([batch, 3, step_size, step_size]), paddle.randint(0, 10, [batch])

    def every_step():
        for _ in range(steps):
            logits, loss = training_step(model, optimizer, x, y, 0.1, contextlib.nullcontext, None)
            float(loss), int((logits.argmax(axis=-1) == y).sum())

    def once():
        window, correct = [], paddle.zeros([], "int64")
        for step in range(steps):
            logits, loss = training_step(model, optimizer, x, y, 0.1, contextlib.nullcontext, None)
            window.append((step, loss.detach(), batch))
            correct += (logits.argmax(axis=-1) == y).sum()
        read_losses(window, steps, 1, "bench"), int(correct)

    model.train()
    train = _interleaved({"every_step": every_step, "once": once}, repeats)
    val_model = build_model("alexnet", "none", 10, val_size)
    rng = np.random.default_rng(0)
    val_x, val_y = rng.integers(0, 256, (val_images, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, val_images)
    prepared = validation_batches(val_x, val_y, val_size, 128)
    val = _interleaved({
        "prepared_each_epoch": lambda: validate(val_model, validation_batches(val_x, val_y, val_size, 128), 0.1),
        "prepared_once": lambda: validate(val_model, prepared, 0.1),
        "preparing": lambda: validation_batches(val_x, val_y, val_size, 128),
    }, repeats)
    step_every, step_once = (statistics.median(train[k]) / steps for k in ("every_step", "once"))
    step_ratio = statistics.median(e / o for e, o in zip(train["every_step"], train["once"], strict=True))
    val_each, val_once, preparing = (statistics.median(val[k]) for k in ("prepared_each_epoch", "prepared_once",
                                                                         "preparing"))
    return {"batch": batch, "step_size": step_size, "step_ms_sync_every_step": round(step_every * 1000, 1),
            "step_ms_sync_per_10_steps": round(step_once * 1000, 1), "step_ratio": round(step_ratio, 3),
            "val_images": val_images, "val_size": val_size, "val_seconds_prepared_each_epoch": round(val_each, 3),
            "val_seconds_prepared_once": round(val_once, 3), "val_ratio": round(val_each / val_once, 2),
            "val_prepare_seconds_per_10000": round(preparing * 10000 / val_images, 2)}


def inference(repeats: int, batch: int, threads: int) -> list[dict]:
    """Inference img/s: eager Paddle against the predictor the evaluate stage uses."""
    import paddle

    from pipeline.models import build_model
    from pipeline.models import inference as predictor

    rows = []
    for arch, size, attention in (("resnet18", 32, "none"), ("alexnet", 128, "none"), ("alexnet", 128, "na-official")):
        model = build_model(arch, attention, 10, size)
        model.eval()
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
        compiled = predictor.compile_model(model, size, "cpu", threads)

        # the loop's model, input and predictor are bound as defaults (the closures only run inside this iteration)
        def eager(model=model, x=x):
            with paddle.no_grad():
                model(paddle.to_tensor(x)).numpy()
        seconds = _interleaved({"eager": eager, "compiled": lambda compiled=compiled, x=x: compiled(x)}, repeats)
        e, c = (_median_rate(seconds[k], batch) for k in ("eager", "compiled"))
        rows.append({"arch": arch, "size": size, "attention": attention, "batch": batch,
                     "eager_img_s": round(e, 1), "compiled_img_s": round(c, 1), "ratio": round(c / e, 2)})
    return rows


def _training_rates(arch: str, size: int, batch: int, repeats: int, threads: int, jobs: int = 1) -> list[float]:
    """img/s of `jobs` training processes running side by side, each with `threads` threads
    (a fresh process each: Paddle fixes its thread count at import)."""
    code = ("import json, statistics; from pipeline.hardware import paddle_setup; paddle_setup.import_paddle(); "
            "from pipeline.tools import bench; from pipeline.models import build_model; "
            f"s = bench._interleaved({{'x': bench._training_step(build_model({arch!r}, 'none', 10, {size}), "
            f"{batch}, {size})}}, {repeats})['x']; print(json.dumps({batch} / statistics.median(s)))")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for _ in range(jobs)]
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError(f"a timing process for {arch} {size} px failed")
    return [float(out.strip().splitlines()[-1]) for out in outputs]


def threads(repeats: int, batch: int, allotted: int) -> list[dict]:
    """Training throughput on one core against all allotted cores used two ways: one job with
    that many threads (Paddle's intra-op threads), or that many one-thread jobs side by side
    (what Snakemake does with the demo's `train_threads: 1`)."""
    rows = []
    for arch, size in THREAD_WORKLOADS:
        one = _training_rates(arch, size, batch, repeats, 1)[0]
        threaded = _training_rates(arch, size, batch, repeats, allotted)[0]
        side_by_side = sum(_training_rates(arch, size, batch, repeats, 1, jobs=allotted))
        rows.append({"arch": arch, "size": size, "batch": batch, "cores": allotted, "one_core_img_s": round(one, 1),
                     "threads_img_s": round(threaded, 1), "jobs_img_s": round(side_by_side, 1),
                     "threads_ratio": round(threaded / one, 2), "jobs_ratio": round(side_by_side / one, 2)})
    return rows


def pipeline_overhead(repeats: int) -> dict:
    """Seconds of a no-op `snakemake --cores 4 all` and of `dvc status`, once everything is built."""
    if not (shutil.which("snakemake") and shutil.which("dvc")):
        return {"noop_seconds": None, "dvc_status_seconds": None, "note": "snakemake or dvc is not on PATH"}
    planned = subprocess.run(["snakemake", "-n", "--quiet", "all"], capture_output=True, text=True)
    if planned.returncode != 0 or "Nothing to be done" not in planned.stdout + planned.stderr:
        return {"noop_seconds": None, "dvc_status_seconds": None,
                "note": "the pipeline is not fully built here; build it (snakemake --cores 4 all) to time a no-op"}
    result = {}
    for key, cmd in (("noop_seconds", ["snakemake", "--cores", "4", "all"]), ("dvc_status_seconds", ["dvc", "status"])):
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            seconds.append(time.perf_counter() - start)
        result[key] = round(statistics.median(seconds), 2)
    return result


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(params: dict, repeats: int = 5, batch: int = 64, quick: bool = False) -> None:
    import paddle

    if quick:  # a smoke run: every measurement, tiny sizes, for tests
        repeats, batch = 1, 4
    allotted = int(os.environ["OMP_NUM_THREADS"])
    device.select("cpu")
    sections = {}
    for name, measure in (
        ("data_path", lambda: data_path(repeats, 64 if quick else 512)),
        ("training", lambda: training(repeats, batch)),
        ("inference", lambda: inference(repeats, 2 * batch, allotted)),
        ("threads", lambda: threads(repeats, batch, allotted)),
        ("host_device", lambda: host_device(repeats, batch if quick else 16, 64 if quick else 512)),
        ("pipeline_overhead", lambda: pipeline_overhead(1 if quick else 3)),
    ):
        start = time.perf_counter()
        print(f"bench: {name} ...", flush=True)
        sections[name] = measure()
        print(f"bench: {name} done in {time.perf_counter() - start:.0f} s", flush=True)

    def pick(rows, **match):
        return next(r for r in rows if all(r[k] == v for k, v in match.items()))
    result = {
        "eval_speedup": pick(sections["inference"], arch="resnet18", size=32)["ratio"],
        "data_speedup": pick(sections["data_path"], size=128)["ratio"],
        "na_overhead": {r["attention"]: r["overhead"] for r in sections["training"]
                        if (r["arch"], r["size"]) == NA_OVERHEAD_WORKLOAD and r["attention"] != "none"},
        "thread_speedup": pick(sections["threads"], arch="alexnet", size=128)["jobs_ratio"],
        "intra_op_speedup": pick(sections["threads"], arch="alexnet", size=128)["threads_ratio"],
        "noop_seconds": sections["pipeline_overhead"]["noop_seconds"],
        **sections,
        "repeats": repeats, "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpu": _cpu_name(), "cores": paddle_setup.available_cores(), "allotted_threads": allotted,
                    "paddle": paddle.__version__, "python": platform.python_version()},
    }
    atomic.write_json(paths.BENCH_JSON, result)
    atomic.write_text(paths.BENCH_TABLE, bench_tables.markdown(result))
    print(bench_tables.markdown(result))
    print(f"wrote {paths.BENCH_JSON} and {paths.BENCH_TABLE}; the next report build shows the table")
