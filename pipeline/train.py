"""Stage `train`: one (configuration, seed) with the post's recipe, the training loop top to bottom.

Adam (lr 1e-3, L2 weight decay 1e-5), cosine annealing stepped every batch over all steps,
label-smoothing cross entropy, best-by-val-acc and final checkpoints. Logs what the post
logs: train loss every `log_every` steps, and per epoch lr, train loss/acc, val loss/acc.
The batches come from pipeline/images/batches.py, saving and resuming from pipeline/core/checkpoints.py.

With `devices_per_job` N > 1 the command re-executes itself through Paddle's launcher as N
workers (pipeline/hardware/distributed.py). The results mean what they mean on one device: `batch_size`
is the global batch, of which each worker takes batch_size / N images (the same shuffle on every
worker, `batches.GlobalBatchSampler`); gradients are averaged over workers (paddle.DataParallel),
so lr and schedule are unchanged; logged loss and accuracy are over the global batch. Worker r
seeds its own randomness (augmentation, dropout) with seed + r; the model starts from rank 0's
initialisation. BatchNorm normalises with each worker's own batch_size / N images (as
DataParallel does); the running statistics are averaged over workers after every epoch.
Validation and every write (checkpoints, csv, summary, resume state) happen on rank 0 while the
others wait.
"""

from __future__ import annotations

from pipeline.hardware import job

if __name__ == "__main__":  # before Paddle is imported: the GPUs and threads this job holds
    job.prepare(training=True)

import functools
import random
import shutil
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F

from pipeline import PipelineError
from pipeline.core import atomic, checkpoints, logs, stage
from pipeline.dag import config, paths
from pipeline.hardware import device, distributed
from pipeline.images import batches, prepared
from pipeline.models import build_model, count_parameters

PRECISION = {paddle.float32: "fp32", paddle.bfloat16: "bf16", paddle.float16: "fp16"}


class TrainingError(PipelineError):
    """Training cannot go on; the message says why and what to change."""


def smoothed_cross_entropy(logits, labels, smoothing: float):
    """(1 - e) * NLL + e * mean over classes of -log p, averaged over the batch (as the post)."""
    log_probs = F.log_softmax(logits, axis=-1)
    nll = -paddle.take_along_axis(log_probs, labels.unsqueeze(1), axis=1).squeeze(1)
    return ((1 - smoothing) * nll - smoothing * log_probs.mean(axis=-1)).mean()


def schedule_length(train_images: int, batch_size: int, epochs: int) -> int:
    """Cosine T_max: every optimiser step of the run (the post's 50000 // 128 * 50)."""
    return train_images // batch_size * epochs


def validate(model, batches: list, smoothing: float):
    """Sample-weighted mean loss and accuracy over `validation_batches`, in eval mode, without
    gradients and with one read back from the device (the per-epoch validation; the evaluate
    stage uses the faster predictor)."""
    model.eval()
    losses, correct = [], paddle.zeros([], "int64")
    with paddle.no_grad():
        for x, y in batches:
            logits = model(x)
            losses.append(smoothed_cross_entropy(logits, y, smoothing))
            correct += (logits.argmax(axis=-1) == y).sum()
    values = paddle.stack(losses).numpy()
    total_loss = sum(float(v) * len(y) for v, (_, y) in zip(values, batches, strict=True))
    count = sum(len(y) for _, y in batches)
    return total_loss / count, int(correct) / count


def read_losses(window: list, log_every: int, world: int, where: str) -> tuple[float, list[dict]]:
    """The losses of the steps in `window` ((step, loss tensor, batch images) each), read back from
    the device in one transfer: (their sample-weighted sum, the rows steps.csv logs for them).
    Raises at the first non-finite one, naming its step."""
    values = paddle.stack([loss for _, loss, _ in window]).numpy() if window else []
    total, rows = 0.0, []
    for (step, _, images_in_batch), value in zip(window, values, strict=True):
        value = float(value)
        if not np.isfinite(value):
            raise TrainingError(f"loss became {value} at step {step} ({where})")
        if step % log_every == 0:
            # The global batch's loss: the mean of the workers' equal shares (the one collective
            # of the step besides the gradients'; nothing on one device).
            (logged,) = distributed.all_sum([value / world])
            rows.append({"step": step, "loss": logged})
        total += value * images_in_batch
    return total, rows


def mixed_precision(amp: str, dev: str):
    """(autocast context factory, GradScaler or None) for amp = fp32 | bf16 | fp16.

    Only on a GPU: Paddle's autocast does nothing on the CPU. fp16 needs loss scaling so small
    gradients do not flush to zero; bf16 has float32's range and needs none.
    """
    if amp != "fp32" and dev != "gpu":
        print(f"amp={amp} applies on a GPU only; training in float32 on the {dev.upper()}")
    enabled = amp != "fp32" and dev == "gpu"
    autocast = functools.partial(paddle.amp.auto_cast, enable=enabled, level="O1",
                                 dtype="bfloat16" if amp == "bf16" else "float16")
    return autocast, paddle.amp.GradScaler() if enabled and amp == "fp16" else None


def training_step(model, optimizer, x, y, smoothing: float, autocast, scaler):
    """Forward under `autocast`, backward (loss-scaled when `scaler`), optimiser step; (logits, loss).
    The loss is computed from float32 logits outside autocast: float32 by construction."""
    with autocast():
        logits = model(x)
    loss = smoothed_cross_entropy(logits if logits.dtype == paddle.float32 else logits.astype("float32"), y, smoothing)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        update_loss_scale(scaler)
    optimizer.clear_grad()
    return logits, loss


def update_loss_scale(scaler) -> None:
    """`scaler.update()`: after an overflow it halves the scale and prints `float(scale)` of its
    one-element scale tensor, which NumPy 2.4 and later (the SLURM plugin needs them) refuse with a
    TypeError. The scale is a 0-d tensor for that call only; Paddle keeps it as [1] elsewhere."""
    if not scaler.is_enable():  # off where autocast is (the CPU): nothing to update
        return
    scaler._scale = scaler._scale.reshape([])
    try:
        scaler.update()
    finally:
        scaler._scale = scaler._scale.reshape([1])


def launch_workers(params: dict, s: dict) -> None:
    """Run this training as `devices_per_job` workers through Paddle's launcher (after checking,
    here, that the devices exist), each running this same command."""
    count, run = s["devices_per_job"], s["run"]
    dev = device.resolve(s["device"], count)
    log_dir = paths.layout(params).log("train", run).with_suffix(".launch")
    overrides = [f"--set={o}" for o in config.cli_overrides(params)]
    worker = [sys.executable, "-u", "-m", "pipeline.train", run, *overrides]
    print(f"{run}: data parallel on {count} {dev.upper()} workers through paddle.distributed.launch "
          f"(each worker's log: {log_dir}/workerlog.<rank>)", flush=True)
    distributed.launch(count, dev, worker, log_dir, job_id=run)


def main(params: dict, run: str) -> None:
    s = config.run_settings(params, run)
    rank, world = device.world()
    if s["devices_per_job"] > 1 and world == 1:
        return launch_workers(params, s)
    if world != s["devices_per_job"]:
        raise TrainingError(f"{world} workers were launched but devices_per_job is {s['devices_per_job']}")
    lead = rank == 0  # validates and writes; the other workers wait
    dev = device.select(s["device"], world)
    distributed.init_distributed(dev)
    # Worker r draws its augmentation and dropout from seed + r; its initial weights are
    # replaced by rank 0's when the model is wrapped for data parallel.
    random.seed(s["seed"] + rank)
    np.random.seed(s["seed"] + rank)
    paddle.seed(s["seed"] + rank)

    layout = paths.layout(params)
    data = prepared.load(layout.prepared(s["arch"]))
    train_x, train_y = prepared.subset(data, "train", s["train_subset"])
    val_x, val_y = prepared.subset(data, "test", s["val_subset"])
    if len(train_x) < s["batch_size"]:
        raise TrainingError(f"{len(train_x)} training images make no full batch of {s['batch_size']}; lower batch_size")

    model = build_model(s["arch"], s["attention"], len(data["class_names"]), s["image_size"])
    net = distributed.data_parallel(model)  # model itself on one device
    t_max = schedule_length(len(train_x), s["batch_size"], s["epochs"])
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(s["lr"], T_max=t_max)
    optimizer = paddle.optimizer.Adam(
        learning_rate=scheduler, parameters=model.parameters(), weight_decay=s["weight_decay"]
    )
    loader = batches.training_batches(train_x, train_y, s, dev, rank, world)
    autocast, scaler = mixed_precision(s["amp"], dev)
    # Work in progress lives outside the declared outputs, which Snakemake and DVC delete
    # before rerunning a job; the outputs appear only when the run is complete.
    work = layout.resume_dir(run)
    state_file = work / "state.pdckpt"
    progress = checkpoints.load_state(state_file, model, optimizer, scheduler, scaler, s, rank)
    if progress is None:
        progress = {"epoch": 0, "step": 0, "best_acc": -1.0, "best_epoch": 0, "elapsed": 0.0,
                    "step_rows": [], "epoch_rows": []}
    elif lead:
        print(f"{run}: resuming after epoch {progress['epoch']} from {state_file}"
              + (f" (with {s['num_workers']} loader workers the later augmentation is drawn afresh: the same "
                 "recipe, not the same bits as an uninterrupted run)" if s["num_workers"] else ""))
    started = time.perf_counter() - progress["elapsed"]
    where = device.describe(dev, world)
    if lead:
        print(f"{run}: {s['arch']} + {s['attention']} on {s['dataset']} ({len(train_x)} train, {len(val_x)} val, "
              f"{s['image_size']} px), {s['epochs']} epochs on {where}")

    val_batches = batches.validation_batches(val_x, val_y, s["image_size"], s["eval_batch_size"]) if lead else []
    for epoch in range(progress["epoch"] + 1, s["epochs"] + 1):
        net.train()
        loader.batch_sampler.set_epoch(epoch)
        lr = optimizer.get_lr()
        # Losses and correct counts stay on the device and are read back once per log_every steps,
        # so the host queues steps ahead of a GPU instead of waiting for each one.
        loss_sum, correct, seen, window = 0.0, paddle.zeros([], "int64"), 0, []
        bar = logs.progress(loader, desc=f"{run} epoch {epoch}/{s['epochs']}", unit="batch", mininterval=2, leave=False,
                   disable=not lead)
        for x, y in bar:
            logits, loss = training_step(net, optimizer, x, y, s["label_smoothing"], autocast, scaler)
            scheduler.step()
            if "precision" not in progress:  # the first step, read once: what the network computed in
                # (Paddle turns bf16 off, with a warning, on GPUs without it, and autocast does nothing on
                # the CPU), and the scale it started at, before any update
                progress["precision"] = PRECISION.get(logits.dtype, str(logits.dtype))
                progress["initial"] = {"loss": float(loss),
                                       "logit_std": float(np.std(logits.astype("float32").numpy(), ddof=1))}
            window.append((progress["step"], loss.detach(), len(y)))
            correct += (logits.argmax(axis=-1) == y).sum()
            seen += len(y)
            progress["step"] += 1
            if progress["step"] % s["log_every"] == 0:
                loss_sum += log_losses(window, s, epoch, world, progress, bar, state_file)
                window = []
        loss_sum += log_losses(window, s, epoch, world, progress, bar, state_file)
        loss_sum, correct, seen = distributed.all_sum([loss_sum, int(correct), seen])  # the epoch over every worker
        distributed.average_buffers(model)  # BatchNorm running statistics: one set for validation and saving
        rng = distributed.gather(checkpoints.rng_state())
        if lead:
            val_loss, val_acc = validate(model, val_batches, s["label_smoothing"])
            row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - started}
            progress["epoch_rows"].append(row)
            print(f"{run} epoch {epoch}/{s['epochs']}: lr {lr:.2e}  train loss {row['train_loss']:.4f} "
                  f"acc {row['train_acc']:.4f}  val loss {val_loss:.4f} acc {val_acc:.4f}", flush=True)
            if val_acc > progress["best_acc"]:
                progress["best_acc"], progress["best_epoch"] = val_acc, epoch
                checkpoints.save_checkpoint(model, optimizer, work / "best")
            progress.update(epoch=epoch, elapsed=row["seconds"])
            checkpoints.save_state(state_file, model, optimizer, scheduler, scaler, progress, s, rng)
        else:
            progress.update(epoch=epoch)
        distributed.barrier()

    if lead:
        write_outputs(layout, run, s, model, optimizer, progress, work, len(train_x), len(val_x), where)
    distributed.barrier()


def log_losses(window: list, s: dict, epoch: int, world: int, progress: dict, bar, state_file) -> float:
    """Read back `window`'s losses (read_losses), record its logged steps; their weighted sum."""
    try:
        total, rows = read_losses(window, s["log_every"], world, f"epoch {epoch}")
    except TrainingError as exc:
        raise TrainingError(f"{s['run']}: {exc}; the last complete epoch is kept in {state_file}; "
                            "lower lr and rerun") from None
    progress["step_rows"] += [{"step": r["step"], "epoch": epoch, "loss": r["loss"]} for r in rows]
    if rows:
        bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}")
    return total


def write_outputs(layout: paths.Layout, run: str, s: dict, model, optimizer, progress: dict, work,
                  train_images: int, val_images: int, where: str) -> None:
    """The run's declared outputs, once it is complete; then its work in progress goes."""
    with atomic.atomic_dir(layout.checkpoints(run)) as out:
        checkpoints.save_checkpoint(model, optimizer, out / "final")
        for suffix in (".pdparams", ".pdopt"):
            shutil.copy2(work / f"best{suffix}", out / f"best{suffix}")
    atomic.write_csv(layout.train_steps(run), progress["step_rows"])
    atomic.write_csv(layout.train_epochs(run), progress["epoch_rows"])
    last = progress["epoch_rows"][-1]
    atomic.write_json(layout.train_summary(run), {
        "best_val_acc": progress["best_acc"], "best_epoch": progress["best_epoch"],
        "final_train_acc": last["train_acc"], "final_train_loss": last["train_loss"],
        "final_val_acc": last["val_acc"], "epochs": s["epochs"], "steps": progress["step"],
        "train_images": train_images, "train_subset": s["train_subset"], "val_images": val_images,
        "image_size": s["image_size"],
        "dataset": s["dataset"], "device": where, "seconds": round(last["seconds"], 1),
        "amp": s["amp"], "precision": progress["precision"], "initial": progress.get("initial"),
        "params": count_parameters(model),
        "checkpoint_sha256": {f.name: atomic.digest(f) for f in sorted(layout.checkpoints(run).glob("*.pd*"))},
    })
    shutil.rmtree(work)


# A data-parallel worker leaves the stage log to its launcher, which copies rank 0's output there.
if __name__ == "__main__":
    stage.run("train", main, target="run", log=not device.launched_worker())
