"""Stage `train`: one (configuration, seed) with the post's recipe.

Adam (lr 1e-3, L2 weight decay 1e-5), cosine annealing stepped every batch over all steps,
label-smoothing cross entropy, best-by-val-acc and final checkpoints. Logs what the post
logs: train loss every `log_every` steps, and per epoch lr, train loss/acc, val loss/acc.
"""

from __future__ import annotations

import csv
import functools
import random
import shutil
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from tqdm import tqdm

from pipeline import PipelineError, atomic, config, device, images, paths
from pipeline.data import load_prepared
from pipeline.models import build_model, count_parameters


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


def evaluate(model, images_u8: np.ndarray, labels: np.ndarray, size: int, batch_size: int, smoothing: float):
    """Sample-weighted mean loss and accuracy over a whole split, in eval mode, without gradients
    (the per-epoch validation; the evaluate stage uses the faster predictor)."""
    model.eval()
    total_loss, correct = 0.0, 0
    with paddle.no_grad():
        for x, y in images.test_batches(images_u8, labels, size, batch_size):
            logits = model(paddle.to_tensor(x))
            y = paddle.to_tensor(y)
            total_loss += float(smoothed_cross_entropy(logits, y, smoothing)) * len(y)
            correct += int((logits.argmax(axis=-1) == y).sum())
    return total_loss / len(labels), correct / len(labels)


def mixed_precision(amp: str, dev: str):
    """(autocast context factory, GradScaler or None) for amp = off | bf16 | fp16.

    Only on a GPU: Paddle's autocast does nothing on the CPU. fp16 needs loss scaling so small
    gradients do not flush to zero; bf16 has float32's range and needs none.
    """
    if amp != "off" and dev != "gpu":
        print(f"amp={amp} applies on a GPU only; training in float32 on the {dev.upper()}")
    enabled = amp != "off" and dev == "gpu"
    autocast = functools.partial(paddle.amp.auto_cast, enable=enabled, level="O1",
                                 dtype="bfloat16" if amp == "bf16" else "float16")
    return autocast, paddle.amp.GradScaler() if enabled and amp == "fp16" else None


def training_step(model, optimizer, x, y, smoothing: float, autocast, scaler):
    """Forward under `autocast`, backward (loss-scaled when `scaler`), optimiser step; (logits, loss)."""
    with autocast():
        logits = model(x)
        loss = smoothed_cross_entropy(logits, y, smoothing)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    optimizer.clear_grad()
    return logits, loss


def training_batches(train_x: np.ndarray, train_y: np.ndarray, s: dict, dev: str):
    """Augmented (x, y) batches for one epoch after another: on the GPU itself when asked
    (uint8 set held there, whole batches augmented by tensor ops), else from a DataLoader."""
    if s["augment_on_device"] and dev == "gpu":
        return images.DeviceBatches(train_x, train_y, s["image_size"], s["batch_size"])
    workers = s["num_workers"]
    paddle.io.reader.use_pinned_memory(s["pin_memory"] and dev == "gpu")
    return paddle.io.DataLoader(
        images.TrainDataset(train_x, train_y, s["image_size"]),
        batch_size=s["batch_size"], shuffle=True, drop_last=True, num_workers=workers,
        use_shared_memory=workers > 0, prefetch_factor=s["prefetch_batches"], persistent_workers=workers > 0,
    )


def subset(arrays: dict, split: str, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    return arrays[f"{split}_images"][:n], arrays[f"{split}_labels"][:n]


def write_csv(path, rows: list[dict]) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def save_checkpoint(model, optimizer, stem) -> None:
    for obj, suffix in ((model.state_dict(), ".pdparams"), (optimizer.state_dict(), ".pdopt")):
        with atomic.atomic_path(f"{stem}{suffix}") as tmp:
            paddle.save(obj, str(tmp))


def save_state(path, model, optimizer, scheduler, progress: dict, settings: dict) -> None:
    """Everything needed to continue after the last complete epoch, written atomically."""
    state = {"settings": settings, "progress": progress, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}}
    with atomic.atomic_path(path) as tmp:
        paddle.save(state, str(tmp))


def load_state(path, model, optimizer, scheduler, settings: dict) -> dict | None:
    """The saved progress if `path` holds a state of this very run (same settings), else None."""
    if not path.exists():
        return None
    state = paddle.load(str(path))
    if state["settings"] != settings:
        print(f"{path}: saved for other settings; starting over")
        return None
    model.set_state_dict(state["model"])
    optimizer.set_state_dict(state["optimizer"])
    scheduler.set_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    paddle.set_rng_state(state["rng"]["paddle"])
    return state["progress"]


def main(params: dict, run: str) -> None:
    s = config.run_settings(params, run)
    dev = device.select(s["device"])
    random.seed(s["seed"])
    np.random.seed(s["seed"])
    paddle.seed(s["seed"])

    data = load_prepared(s["dataset"])
    train_x, train_y = subset(data, "train", s["train_subset"])
    val_x, val_y = subset(data, "test", s["val_subset"])
    if len(train_x) < s["batch_size"]:
        raise TrainingError(f"{len(train_x)} training images make no full batch of {s['batch_size']}; lower batch_size")

    model = build_model(s["arch"], s["attention"], len(data["class_names"]), s["image_size"])
    t_max = schedule_length(len(train_x), s["batch_size"], s["epochs"])
    scheduler = paddle.optimizer.lr.CosineAnnealingDecay(s["lr"], T_max=t_max)
    optimizer = paddle.optimizer.Adam(
        learning_rate=scheduler, parameters=model.parameters(), weight_decay=s["weight_decay"]
    )
    loader = training_batches(train_x, train_y, s, dev)
    autocast, scaler = mixed_precision(s["amp"], dev)
    # Work in progress lives outside the declared outputs, which Snakemake and DVC delete
    # before rerunning a job; the outputs appear only when the run is complete.
    work = paths.resume_dir(run)
    state_file = work / "state.pdckpt"
    progress = load_state(state_file, model, optimizer, scheduler, s)
    if progress is None:
        progress = {"epoch": 0, "step": 0, "best_acc": -1.0, "best_epoch": 0, "elapsed": 0.0,
                    "step_rows": [], "epoch_rows": []}
    else:
        print(f"{run}: resuming after epoch {progress['epoch']} from {state_file}")
    started = time.perf_counter() - progress["elapsed"]
    print(f"{run}: {s['arch']} + {s['attention']} on {s['dataset']} ({len(train_x)} train, {len(val_x)} val, "
          f"{s['image_size']} px), {s['epochs']} epochs on {device.describe(dev)}")

    for epoch in range(progress["epoch"] + 1, s["epochs"] + 1):
        model.train()
        lr = optimizer.get_lr()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"{run} epoch {epoch}/{s['epochs']}", unit="batch", mininterval=2, leave=False)
        for x, y in bar:
            logits, loss = training_step(model, optimizer, x, y, s["label_smoothing"], autocast, scaler)
            scheduler.step()
            loss_value = float(loss)
            step = progress["step"]
            if not np.isfinite(loss_value):
                raise TrainingError(f"{run}: loss became {loss_value} at step {step} (epoch {epoch}); "
                                    f"the last complete epoch is kept in {state_file}; lower lr and rerun")
            if step % s["log_every"] == 0:
                progress["step_rows"].append({"step": step, "epoch": epoch, "loss": loss_value})
                bar.set_postfix(loss=f"{loss_value:.3f}")
            loss_sum += loss_value * len(y)
            correct += int((logits.argmax(axis=-1) == y).sum())
            seen += len(y)
            progress["step"] += 1
        val_loss, val_acc = evaluate(model, val_x, val_y, s["image_size"], s["eval_batch_size"], s["label_smoothing"])
        row = {"epoch": epoch, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "val_loss": val_loss, "val_acc": val_acc, "seconds": time.perf_counter() - started}
        progress["epoch_rows"].append(row)
        print(f"{run} epoch {epoch}/{s['epochs']}: lr {lr:.2e}  train loss {row['train_loss']:.4f} "
              f"acc {row['train_acc']:.4f}  val loss {val_loss:.4f} acc {val_acc:.4f}", flush=True)
        if val_acc > progress["best_acc"]:
            progress["best_acc"], progress["best_epoch"] = val_acc, epoch
            save_checkpoint(model, optimizer, work / "best")
        progress.update(epoch=epoch, elapsed=row["seconds"])
        save_state(state_file, model, optimizer, scheduler, progress, s)

    with atomic.atomic_dir(paths.checkpoints(run)) as out:
        save_checkpoint(model, optimizer, out / "final")
        for suffix in (".pdparams", ".pdopt"):
            shutil.copy2(work / f"best{suffix}", out / f"best{suffix}")
    write_csv(paths.train_steps(run), progress["step_rows"])
    write_csv(paths.train_epochs(run), progress["epoch_rows"])
    last = progress["epoch_rows"][-1]
    atomic.write_json(paths.train_summary(run), {
        "best_val_acc": progress["best_acc"], "best_epoch": progress["best_epoch"],
        "final_train_acc": last["train_acc"], "final_train_loss": last["train_loss"],
        "final_val_acc": last["val_acc"], "epochs": s["epochs"], "steps": progress["step"],
        "train_images": len(train_x), "val_images": len(val_x), "image_size": s["image_size"],
        "dataset": s["dataset"], "device": device.describe(dev), "seconds": round(last["seconds"], 1),
        "params": count_parameters(model),
        "checkpoint_sha256": {f.name: atomic.digest(f) for f in sorted(paths.checkpoints(run).glob("*.pd*"))},
    })
    shutil.rmtree(work)
