"""`python -m pipeline doctor`: check this machine the way the pipeline will use it, before a long run.

It runs what the active profile's jobs will run, in small: the Paddle build, CUDA, each visible
GPU, the start of a training step of every architecture with every attention variant on the
training device (on a GPU in fp32 and each amp mode, against the same step on the CPU, within the
bounds of pipeline/models/tolerances.py), the inference predictor against eager Paddle, loader workers in
shared memory delivering where training's batches go, a two-worker data-parallel step, and the
compiler of the fused CPU kernels. Each check prints one row as it ends: what it checked, its
result (ok | warn | FAIL | not run) and what it found, with a one-line fix under every warning and
failure. A check this machine cannot run says why. The command fails if any check failed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from pipeline import PipelineError, train
from pipeline.hardware import device, distributed, paddle_setup
from pipeline.images import batches
from pipeline.models import ATTENTIONS, build_model, fused, inference, tolerances

AMP_MODES = ("fp32", "bf16", "fp16")
# A skipped fp16 step halves GradScaler's scale (2^16 at the start), down to 1 after 16. Training
# skips the same steps (and says so), so they are no fault. With BatchNorm on its initial running
# statistics, ResNet18's scaled gradients at 128 px need up to 8 halvings.
MAX_SKIPPED_STEPS = 16
STEP_MOVES_LOGITS = 0.25  # how far the compared gradient step moves the logits, as a fraction of their scale
STEP_IMAGES = 8
CLASSES = 10  # the count does not change what a device computes
SHARED_MEMORY = Path("/dev/shm")


class DoctorFailed(PipelineError):
    """At least one check failed; the table says which and how to fix it."""


@dataclass
class Row:
    check: str
    result: str  # ok | warn | FAIL | not run
    found: str
    fix: str = ""


def show(row: Row) -> Row:
    print(f"{row.check:<30} {row.result:<8} {row.found}", flush=True)
    if row.fix:
        print(f"{'':<30} {'':<8} fix: {row.fix}", flush=True)
    return row


# ---- Paddle, CUDA and the GPUs -------------------------------------------------------------------

def paddle_build(s: dict) -> Row:
    """Exactly one build is installed (every command checks that first); here its version, and
    the GPU build when the profile trains on a GPU."""
    ((name, version),) = paddle_setup.paddle_builds().items()
    cuda = paddle.is_compiled_with_cuda()
    found = f"{name} {version}" + ("" if cuda else " (CPU build)")
    if version != paddle_setup.PADDLE_VERSION:
        index = f" -i {paddle_setup.PADDLE_GPU_INDEX}" if cuda else ""
        return Row("Paddle build", "FAIL", f"{found}; the pipeline pins {paddle_setup.PADDLE_VERSION}",
                   f"pip install {name}=={paddle_setup.PADDLE_VERSION}{index}")
    if s["device"] == "gpu" and not cuda:
        return Row("Paddle build", "FAIL", f"{found}, but the profile trains on a GPU",
                   f"pip uninstall -y {paddle_setup.CPU_BUILD}, then {paddle_setup.INSTALL_GPU}; or train on the CPU: "
                   "--config device=cpu")
    return Row("Paddle build", "ok", found)


def cuda_versions() -> Row:
    if not paddle.is_compiled_with_cuda():
        return Row("CUDA and cuDNN", "not run", "the CPU build of Paddle has no CUDA")
    versions = f"Paddle built with CUDA {paddle.version.cuda()}, cuDNN {paddle.version.cudnn()}"
    return Row("CUDA and cuDNN", "ok", versions)


def gpus(s: dict) -> tuple[list[Row], int]:
    """A row per visible GPU, and how many there are (0 when CUDA itself fails, with its fix)."""
    if not paddle.is_compiled_with_cuda():
        return [Row("GPUs", "not run", "the CPU build of Paddle sees no GPU")], 0
    try:
        count = device.gpu_count()
        properties = [paddle.device.cuda.get_device_properties(i) for i in range(count)]
    except (OSError, RuntimeError) as error:  # gpu_count's CudaError, or Paddle's own from the properties
        failure = error if isinstance(error, device.CudaError) else device.cuda_failure(error)
        return [Row("GPUs", "FAIL", f"CUDA failed: {failure.cause}", failure.fix)], 0
    if not count:
        result = "FAIL" if s["device"] == "gpu" else "warn"
        return [Row("GPUs", result, "the GPU build of Paddle sees no GPU",
                    "check nvidia-smi, the driver and CUDA_VISIBLE_DEVICES")], 0
    rows = []
    for i, p in enumerate(properties):
        found = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}"
        if s["amp"] == "bf16" and p.major < 8:
            rows.append(Row(f"GPU {i}", "FAIL", f"{found}: no bfloat16 (needs 8.0)",
                            "train in fp16 or fp32: --config amp=fp16"))
        else:
            rows.append(Row(f"GPU {i}", "ok", found))
    return rows, count


# ---- One training step of each model ---------------------------------------------------------------

@dataclass
class Gradients:
    """What the start of one training step computes: the weights it started from, the logits, every
    parameter's (unscaled) gradient, the precision autocast actually ran, and the fp16 steps skipped."""
    start: dict
    logits: np.ndarray
    grads: dict
    precision: str
    skipped: int


def comparable_model(arch: str, attention: str, size: int, dev: str, state: dict | None):
    """The model on `dev` from the weights `state` (None: fresh ones, seeded), in a form two devices
    compute alike: dropout off, and BatchNorm with its running statistics (eval mode). Batch
    statistics of a few images amplify rounding tens of times where the feature maps are small
    (1x1 in ResNet18's last stage at 16 px), so they would compare the batch, not the device."""
    paddle.set_device(dev)
    if state is None:
        paddle.seed(0)
    model = build_model(arch, attention, CLASSES, size)
    if state is not None:
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.p = 0.0
    return model.eval()


def forward_backward(arch: str, attention: str, size: int, dev: str, amp: str, state: dict | None, batch,
                     labels) -> Gradients:
    """The forward and backward of a training step as training takes them (train.mixed_precision:
    autocast, loss scaling) on `dev`, of `comparable_model`. With fp16, a step whose scaled
    gradients overflow is skipped and the scale halved, as GradScaler does in training; the
    gradients are those of the first step that fits."""
    model = comparable_model(arch, attention, size, dev, state)
    start = {k: v.numpy() for k, v in model.state_dict().items()}
    optimizer = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())  # the scaler's bookkeeping
    autocast, scaler = train.mixed_precision(amp, dev)
    x, y = paddle.to_tensor(batch), paddle.to_tensor(labels)
    for skipped in range(MAX_SKIPPED_STEPS + 1):
        with autocast():
            logits = model(x)
        loss = train.smoothed_cross_entropy(logits.astype("float32"), y, 0.1)
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"loss {float(loss)}")
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        grads = {name: p.grad.astype("float32").numpy() for name, p in model.named_parameters() if p.grad is not None}
        if all(np.isfinite(g).all() for g in grads.values()):
            break
        if scaler is None or skipped == MAX_SKIPPED_STEPS:
            raise FloatingPointError(f"non-finite gradients after {skipped} skipped steps")
        scaler.step(optimizer)  # skipped, as in training
        train.update_loss_scale(scaler)  # halves it
        optimizer.clear_grad()
    return Gradients(start, logits.astype("float32").numpy(), grads, train.PRECISION[logits.dtype], skipped)


def logits_after_step(arch: str, attention: str, size: int, dev: str, amp: str, start: dict, grads: dict,
                      lr: float, batch) -> np.ndarray:
    """The logits after one plain gradient step, weights - lr * gradients, computed on `dev` in `amp`.
    The step is linear in the gradients, so it checks them as well conditioned as the logits; an
    Adam step would not be (its first update is close to lr * sign(gradient), which turns
    rounding-sized differences of small gradients into differences of lr)."""
    stepped = {k: v - lr * grads[k] if k in grads else v for k, v in start.items()}
    model = comparable_model(arch, attention, size, dev, stepped)
    autocast, _ = train.mixed_precision(amp, dev)
    with paddle.no_grad(), autocast():
        return model(paddle.to_tensor(batch)).astype("float32").numpy()


def step_size(arch: str, attention: str, size: int, cpu: Gradients, batch) -> float:
    """The learning rate at which the CPU's gradient step moves the logits by STEP_MOVES_LOGITS of
    their scale (to first order), so that the step shows the gradients at the logits' own scale."""
    norm = float(np.sqrt(sum(float((g * g).sum()) for g in cpu.grads.values())))
    probe = 1e-3 / max(norm, np.finfo(np.float32).tiny)
    moved = float(np.abs(logits_after_step(arch, attention, size, "cpu", "fp32", cpu.start, cpu.grads, probe, batch)
                         - cpu.logits).max())
    return probe * STEP_MOVES_LOGITS * tolerances.logit_scale(cpu.logits) / moved if moved else probe


def compare_on_gpu(arch: str, attention: str, size: int, cpu: Gradients, batch, labels,
                   on_gpu=lambda amp: contextlib.nullcontext()) -> tuple[list[str], list[str]]:
    """The step in each amp mode on the GPU against `cpu`, the same step on the CPU in float32: the
    logits before the step and after a gradient step, each over the logit scale, against the bound
    of the format the GPU computed in (tolerances.relative_bound). Returns (each mode's report, the
    modes over their bounds). The GPU's side runs within `on_gpu(amp)`."""
    lr = step_size(arch, attention, size, cpu, batch)
    after_cpu = logits_after_step(arch, attention, size, "cpu", "fp32", cpu.start, cpu.grads, lr, batch)
    scale = tolerances.logit_scale(cpu.logits)
    parts, failed = [], []
    for amp in AMP_MODES:
        with on_gpu(amp):
            gpu = forward_backward(arch, attention, size, "gpu", amp, cpu.start, batch, labels)
            after_gpu = logits_after_step(arch, attention, size, "gpu", amp, cpu.start, gpu.grads, lr, batch)
            number_format = device.number_format("gpu", gpu.precision)
        bound = tolerances.relative_bound(number_format, attention)
        before = float(np.abs(gpu.logits - cpu.logits).max()) / scale
        after = float(np.abs(after_gpu - after_cpu).max()) / scale
        ran = f" as {number_format}" if number_format != amp else ""
        skipped = f", {gpu.skipped} overflowing step(s) skipped as in training" if gpu.skipped else ""
        parts.append(f"{amp}{ran} {before:.1e} and {after:.1e} after a step/{bound:.1e}{skipped}")
        if max(before, after) > bound:
            failed.append(amp)
    return parts, failed


def training_steps(sizes: dict, gpu: bool, no_gpu: str) -> list[Row]:
    rows = []
    rng = np.random.default_rng(0)
    for arch, size in sizes.items():
        batch = rng.standard_normal((STEP_IMAGES, 3, size, size)).astype(np.float32)
        labels = rng.integers(0, CLASSES, STEP_IMAGES)
        for attention in ATTENTIONS:
            name = f"step {arch} + {attention}"
            try:
                cpu = forward_backward(arch, attention, size, "cpu", "fp32", None, batch, labels)
                if not gpu:
                    rows.append(show(Row(name, "ok", f"fp32 on the CPU, {size} px; against a GPU: not run ({no_gpu})")))
                    continue
                parts, failed = compare_on_gpu(arch, attention, size, cpu, batch, labels)
                found = f"GPU against CPU, {size} px: " + "; ".join(parts)
                rows.append(show(Row(name, "FAIL" if failed else "ok", found,
                                     f"the GPU computes this model otherwise in {', '.join(failed)}: report it with "
                                     "this table; train in another amp mode meanwhile" if failed else "")))
            except Exception as error:  # a model that does not run on this device is what we look for
                rows.append(show(Row(name, "FAIL", f"{type(error).__name__}: {str(error).strip().splitlines()[0]}",
                                     "see the error; `python -m pipeline doctor` reruns this check")))
            finally:
                paddle.set_device("cpu")
    return rows


# ---- Inference, loader, data parallel, compiler --------------------------------------------------------

def predictors(params: dict, sizes: dict, dev: str) -> list[Row]:
    """The predictor the evaluation uses on `dev` against eager Paddle, for every configuration of the matrix."""
    rows = []
    engine = inference.ENGINE[dev]
    for arch, size in sizes.items():
        for attention in params["attentions"]:
            name = f"predictor {arch} + {attention}"
            try:
                paddle.set_device(dev)
                paddle.seed(0)
                model = build_model(arch, attention, CLASSES, size)
                batch = np.random.default_rng(1).standard_normal((STEP_IMAGES, 3, size, size)).astype(np.float32)
                check = inference.check_against_eager(model, inference.compile_model(model, size, dev), batch,
                                                      attention, engine, device.float32_format(dev))
                rows.append(show(Row(name, "ok", f"{engine}: logits within {check['max_logit_diff']:.1e} "
                                                 f"(allowed {check['tolerance']:.1e} in {check['number_format']}), "
                                                 "top-1 equal")))
            except Exception as error:
                rows.append(show(Row(name, "FAIL", str(error).strip().splitlines()[0],
                                     "evaluation would fail the same way: report it with this table")))
            finally:
                paddle.set_device("cpu")
    return rows


def shared_memory_needed(s: dict) -> int:
    """Bytes the loader workers hold in shared memory at once: each worker's prefetched float32 batches."""
    local_batch = s["batch_size"] // s["devices_per_job"]
    return s["num_workers"] * s["prefetch_batches"] * local_batch * 3 * s["image_size"] ** 2 * 4


def shared_memory_row(s: dict, available: int) -> Row | None:
    """A failure row when `available` bytes of /dev/shm cannot hold what the workers need, else None."""
    needed = shared_memory_needed(s)
    if available >= needed:
        return None
    return Row("loader workers", "FAIL",
               f"{SHARED_MEMORY} has {available / 2**20:.0f} MB free; {s['num_workers']} workers x "
               f"{s['prefetch_batches']} batches of {s['image_size']} px need {needed / 2**20:.0f} MB",
               "give the machine more shared memory (Docker: --shm-size=1g) or lower num_workers or prefetch_batches")


def loader(s: dict, dev: str) -> Row:
    """The training loader (batches.training_batches) with the profile's workers, on synthetic images,
    delivering to the place training's batches go to (device.select, as the training stage calls it):
    on a GPU through page-locked memory when pin_memory is on."""
    if not s["num_workers"]:
        return Row("loader workers", "not run", "num_workers: 0 (the training process augments its own batches)")
    if s["augment_on_device"] and dev == "gpu":
        return Row("loader workers", "not run", "augment_on_device: the GPU augments whole batches")
    stats = os.statvfs(SHARED_MEMORY)
    short = shared_memory_row(s, stats.f_bavail * stats.f_frsize)
    if short:
        return short
    s = {**s, "seed": 0}
    count = s["batch_size"] * 2 * s["num_workers"]
    x = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    y = np.zeros(count, np.int64)
    started = time.perf_counter()
    try:
        device.select(s["device"] if dev == "gpu" else "cpu")  # the earlier checks leave Paddle on the CPU
        places = {str(batch.place) for batch, _ in batches.training_batches(x, y, s, dev)}
    except Exception as error:
        return Row("loader workers", "FAIL", f"{type(error).__name__}: {str(error).strip().splitlines()[0]}",
                   "try num_workers: 0; if it names shared memory, give the machine more (Docker: --shm-size=1g)")
    seconds = time.perf_counter() - started
    size_mb = stats.f_blocks * stats.f_frsize / 2**20
    return Row("loader workers", "ok", f"{s['num_workers']} workers in shared memory ({size_mb:.0f} MB, "
                                       f"{shared_memory_needed(s) / 2**20:.0f} MB needed): batches of "
                                       f"{s['image_size']} px on {', '.join(sorted(places))}, {count / seconds:.0f} "
                                       "img/s with start-up")


def data_parallel(s: dict, dev: str, gpu_count: int) -> Row:
    """Two workers through Paddle's launcher, as a training job with devices_per_job 2 runs."""
    if dev == "gpu" and gpu_count < 2:
        return Row("data parallel", "not run", f"{gpu_count} GPU visible; it needs 2")
    if dev == "cpu" and s["devices_per_job"] < 2:
        return Row("data parallel", "not run", "no GPU, and the profile trains on one CPU process (devices_per_job: 1)")
    output = io.StringIO()
    with tempfile.TemporaryDirectory() as logs, contextlib.redirect_stdout(output):
        try:
            distributed.launch(2, dev, [sys.executable, "-u", "-m", "pipeline", "doctor", "--data-parallel-worker",
                                   "--set", f"device={dev}"], Path(logs), job_id="doctor")
        except PipelineError as error:
            return Row("data parallel", "FAIL", str(error),
                       "check NCCL (rerun with NCCL_DEBUG=INFO) and that the GPUs see each other")
    lines = [line for line in output.getvalue().splitlines() if line.startswith("data parallel:")]
    return Row("data parallel", "ok", lines[-1].removeprefix("data parallel: ") if lines else "2 workers, one step")


def run_data_parallel_worker(s: dict) -> None:
    """One worker of `data_parallel`: a step of AlexNet + na-blog on this worker's own images;
    the weights must then be the same on both (gradients averaged over workers)."""
    dev = device.select(s["device"], 2)
    rank, world = distributed.init_distributed(dev)
    paddle.seed(0)
    size = 64
    model = build_model("alexnet", "na-blog", CLASSES, size)
    net = distributed.data_parallel(model)
    optimizer = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    rng = np.random.default_rng(rank)
    x = paddle.to_tensor(rng.standard_normal((4, 3, size, size)).astype(np.float32))
    y = paddle.to_tensor(rng.integers(0, CLASSES, 4))
    train.training_step(net, optimizer, x, y, 0.1, contextlib.nullcontext, None)
    sums = distributed.gather(float(sum(float(p.sum()) for p in model.parameters())))
    if rank == 0:
        if max(sums) - min(sums) > 1e-6 * max(1.0, abs(sums[0])):
            print(f"error: the {world} workers' weights differ after one step (sums {sums})", flush=True)
            sys.exit(1)
        print(f"data parallel: {world} {dev.upper()} workers, one step, the same weights after it", flush=True)


def compiler() -> Row:
    """The C++ compiler the fused CPU kernels need, and the kernels against the composed ops."""
    name = "C++ compiler"
    found = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if not found:
        return Row(name, "warn", "none: na-official and na-paper train on the CPU as Paddle ops (same results, slower)",
                   "install g++ (apt-get install g++)")
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    if fused.kernels() is None:
        return Row(name, "warn", f"{version}: the fused kernels did not build (see the note above)",
                   "check that the compiler works: the CPU runs Paddle ops meanwhile")
    from pipeline.models.attention import NAOfficial

    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 8, 5, 5)).astype(np.float32))
    layer = NAOfficial(8)
    layer.gamma.set_value(paddle.full([1], 1.5))  # it starts at 0, where every gate is the same
    diff = float((layer(x) - layer.composed(x)).abs().max())
    result = "ok" if diff < 1e-5 else "FAIL"
    return Row(name, result, f"{version}; fused kernels in {fused.cache_dir()}, within {diff:.0e} of the Paddle ops",
               "" if result == "ok" else "delete that folder and rerun; report it if it stays")


def main(params: dict, data_parallel_worker: bool = False) -> None:
    from pipeline.dag import config

    s = config.profile_settings(params)
    if data_parallel_worker:
        return run_data_parallel_worker(s)
    per_arch = [config.arch_settings(params, arch) for arch in params["archs"]]
    sizes = {a["arch"]: a["image_size"] for a in per_arch}
    print(f"Checking this machine for profile {params['profile']} (device: {s['device']}, amp: {s['amp']}); "
          "each row prints when its check ends.\n")
    print(f"{'check':<30} {'result':<8} found")
    started = time.perf_counter()
    gpu_rows, gpu_count = gpus(s)
    rows = [show(paddle_build(s)), show(cuda_versions()), *map(show, gpu_rows)]
    dev = "gpu" if gpu_count and device.wants_gpu(s["device"]) else "cpu"
    no_gpu = "the profile trains on the CPU" if gpu_count else "no GPU"
    rows += training_steps(sizes, dev == "gpu", no_gpu)
    rows += predictors(params, sizes, dev)
    if dev == "cpu":
        rows.append(show(Row("GPU predictor", "not run", no_gpu)))
    largest = max(per_arch, key=lambda a: a["image_size"])  # the loader's heaviest batches
    rows += [show(loader(largest, dev)), show(data_parallel(s, dev, gpu_count)), show(compiler())]
    counts = {r: sum(row.result == r for row in rows) for r in ("ok", "warn", "FAIL", "not run")}
    print(f"\n{', '.join(f'{n} {r}' for r, n in counts.items())} in {time.perf_counter() - started:.0f} s")
    if counts["FAIL"]:
        raise DoctorFailed(f"{counts['FAIL']} check(s) failed (FAIL rows above, each with its fix); "
                           "fix them before a long run")
