"""Checkpoints and resume: the run's saved models, and the state that lets a killed run go on.

A training run saves `best` (by val acc) and `final` model and optimizer states, and after
every complete epoch everything it needs to continue (weights, optimizer, schedule, fp16 loss
scale, progress, every worker's random states) in one file, written atomically. A rerun resumes from that file
only if it was saved for the very same settings.
"""

from __future__ import annotations

import random

import numpy as np
import paddle

from pipeline.core import atomic


def save_checkpoint(model, optimizer, stem) -> None:
    for obj, suffix in ((model.state_dict(), ".pdparams"), (optimizer.state_dict(), ".pdopt")):
        with atomic.atomic_path(f"{stem}{suffix}") as tmp:
            paddle.save(obj, str(tmp))


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}


def save_state(path, model, optimizer, scheduler, scaler, progress: dict, settings: dict, rng: list[dict]) -> None:
    """Everything needed to continue after the last complete epoch, written atomically.
    `scaler`: fp16's GradScaler or None; its scale is kept, or a resumed run would start again at
    2^16 and skip its first steps while the schedule advances. `rng`: every worker's random
    states (`rng_state()`), in rank order."""
    state = {"settings": settings, "progress": progress, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "loss_scale": scaler.state_dict() if scaler is not None else None, "rng": rng}
    with atomic.atomic_path(path) as tmp:
        paddle.save(state, str(tmp))


def load_state(path, model, optimizer, scheduler, scaler, settings: dict, rank: int = 0) -> dict | None:
    """The saved progress if `path` holds a state of this very run (same settings, so the same
    number of workers), else None; worker `rank` gets its own random states back."""
    if not path.exists():
        return None
    state = paddle.load(str(path))
    if state["settings"] != settings:
        if rank == 0:
            print(f"{path}: saved for other settings; starting over")
        return None
    saved, visible = len(state["rng"][rank]["paddle"]), len(paddle.get_rng_state())
    if saved != visible:  # Paddle keeps one generator per visible device
        if rank == 0:
            print(f"{path}: saved with {saved} visible device(s), {visible} now; starting over")
        return None
    model.set_state_dict(state["model"])
    optimizer.set_state_dict(state["optimizer"])
    scheduler.set_state_dict(state["scheduler"])
    if scaler is not None and state["loss_scale"]:
        scaler.load_state_dict(state["loss_scale"])
    rng = state["rng"][rank]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    paddle.set_rng_state(rng["paddle"])
    return state["progress"]
