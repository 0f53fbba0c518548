"""Where a notebook's figure goes."""

from __future__ import annotations

from pipeline.core import atomic


def save_figure(fig, path) -> None:
    """A notebook's figure, written whole (reports/<configuration>/figures/<name>.png) for the report to embed."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
