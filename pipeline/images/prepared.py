"""The prepared dataset: what the data stage writes (one .npz of uint8 images per architecture)
and what training and evaluation read back; here, so that neither depends on the download code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import PipelineError
from pipeline.core import atomic


def save(path: Path, arrays: dict) -> None:
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load(path: Path) -> dict:
    if not path.exists():
        raise PipelineError(f"{path} is missing; run the data stage first (snakemake --cores 4 all or dvc repro)")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def subset(arrays: dict, split: str, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` images and labels of a split ("train" or "test") of a prepared archive; all when n is None."""
    return arrays[f"{split}_images"][:n], arrays[f"{split}_labels"][:n]
