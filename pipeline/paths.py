"""Where every artifact lives. dvc.yaml spells the same paths out; tests/test_dag.py keeps them equal.

Run outputs are grouped by kind (runs/checkpoints, runs/train, runs/eval) so that a stage that
reads every run's logs can depend on one folder in DVC, as it does on the run list in Snakemake.
"""

from __future__ import annotations

from pathlib import Path

PREPARED = Path("data/prepared")
CHECKPOINTS = Path("runs/checkpoints")
TRAIN_LOGS = Path("runs/train")
EVALS = Path("runs/eval")
REPORTS = Path("reports")
NOTEBOOK_SOURCES = Path("notebooks")
NOTEBOOKS = ("learning_curves", "predictions", "comparison", "diagnostics")
COMPARISON_TABLE = REPORTS / "comparison.json"
REPORT = REPORTS / "index.html"
PROVENANCE = REPORTS / "provenance.json"  # the report's manifest: artifacts, commit, versions, wall times
BENCH_JSON = REPORTS / "bench" / "bench.json"  # `python -m pipeline bench`, not a pipeline stage
BENCH_TABLE = REPORTS / "bench" / "bench.md"


def prepared(dataset: str) -> Path:
    return PREPARED / f"{dataset}.npz"


def checkpoints(run: str) -> Path:
    return CHECKPOINTS / run


def resume_dir(run: str) -> Path:
    """A training job's work in progress (per-epoch state, best checkpoint so far); not an output."""
    return Path("runs/resume") / run


def train_steps(run: str) -> Path:
    return TRAIN_LOGS / run / "steps.csv"


def train_epochs(run: str) -> Path:
    return TRAIN_LOGS / run / "epochs.csv"


def train_summary(run: str) -> Path:
    return TRAIN_LOGS / run / "summary.json"


def evaluation(run: str) -> Path:
    return EVALS / run / "metrics.json"


def predictions(run: str) -> Path:
    return EVALS / run / "predictions.npz"


def attention(run: str) -> Path:
    return EVALS / run / "attention.json"


def notebook_source(name: str) -> Path:
    return NOTEBOOK_SOURCES / f"{name}.py"


def executed_notebook(name: str) -> Path:
    return REPORTS / "notebooks" / f"{name}.ipynb"


def notebook_html(name: str) -> Path:
    return REPORTS / "notebooks" / f"{name}.html"


def notebook_figure(name: str) -> Path:
    return REPORTS / "figures" / f"{name}.png"


def notebook_io(name: str, runs: list[str]) -> tuple[list[Path], list[Path]]:
    """(run artifacts read, artifacts written besides the executed notebook and its HTML)."""
    if name == "learning_curves":
        return [p for r in runs for p in (train_steps(r), train_epochs(r), train_summary(r))], [notebook_figure(name)]
    if name == "predictions":
        return [predictions(r) for r in runs], [notebook_figure(name)]
    if name == "comparison":
        return [p for r in runs for p in (train_summary(r), evaluation(r), attention(r))], [COMPARISON_TABLE]
    if name == "diagnostics":
        return [attention(r) for r in runs], [notebook_figure(name)]
    raise KeyError(name)


def report_inputs(runs: list[str]) -> list[Path]:
    """Everything the report stage reads: its code, the notebooks' outputs, and, for the
    provenance manifest, every artifact of the runs and the prepared data (folders as folders)."""
    return (
        [Path("pipeline/report.py"), Path("pipeline/provenance.py"), Path("pipeline/results.py"), PREPARED]
        + [p for r in runs for p in (checkpoints(r), train_steps(r), train_epochs(r), train_summary(r),
                                     evaluation(r), predictions(r), attention(r))]
        + [p for n in NOTEBOOKS for p in (executed_notebook(n), notebook_html(n), *notebook_io(n, runs)[1])]
    )


def log(stage: str, target: str | None = None) -> Path:
    """Each `python -m pipeline` command copies its terminal output here."""
    return Path("logs") / stage / f"{target or stage}.log"
