"""Numbers as a reader sees them, the one place they are formatted (findings, tables, templates)."""

from __future__ import annotations

__all__ = ["acc", "change", "count", "percent", "points", "ratio"]


def points(x: float | None) -> str:
    """A difference of accuracies in percentage points, signed: 0.0491 -> "+4.91"."""
    return "–" if x is None else f"{100 * x:+.2f}"


def percent(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def count(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def acc(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def change(x: float | None) -> str:
    """A relative change: 0.059 -> "+5.9%"."""
    return "–" if x is None else f"{x:+.1%}"
