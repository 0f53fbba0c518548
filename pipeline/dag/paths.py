"""Where every artifact lives. The Snakefile and the generated dvc.yaml both take their paths from here.

Each configuration keeps its results apart, so no command overwrites what another one built:

    data/prepared/<profile>/<arch>.npz             the images an architecture trains on in a profile
    runs/<configuration>/{checkpoints,train,eval}/<run>/...
    reports/<configuration>/index.html, ...
    logs/<configuration>/<stage>/<target>.log

`<configuration>` is the profile, plus a short key of any overrides (config.configuration), e.g.
`demo` or `paper-3f9c2a1b`. Run outputs are grouped by kind (train, eval) so that a stage that
reads every run's logs can depend on one folder in DVC, as it does on the run list in Snakemake.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

NOTEBOOK_SOURCES = Path("notebooks")
NOTEBOOKS = ("learning_curves", "predictions", "comparison", "diagnostics")
BENCH_JSON = Path("reports/bench/bench.json")  # `python -m pipeline bench`, not a pipeline stage
BENCH_TABLE = Path("reports/bench/bench.md")


def notebook_source(name: str) -> Path:
    return NOTEBOOK_SOURCES / f"{name}.py"


@cache
def notebook_parameters(name: str) -> frozenset[str]:
    """The names a notebook's `parameters` cell assigns (jupytext's percent format): what papermill
    injects into it, and so what settings its stage tracks."""
    cells = re.split(r"^# %%", notebook_source(name).read_text(), flags=re.M)
    cell = next(c for c in cells if c.startswith(' tags=["parameters"]'))
    return frozenset(target.id for node in ast.parse(cell.split("\n", 1)[1]).body if isinstance(node, ast.Assign)
                     for target in node.targets if isinstance(target, ast.Name))


@dataclass(frozen=True)
class Layout:
    """The paths of one configuration. dvc.yaml's are this class with ${...} templates for names."""

    profile: str
    configuration: str

    @property
    def prepared_dir(self) -> Path:
        return Path("data/prepared") / self.profile

    def prepared(self, arch: str) -> Path:
        return self.prepared_dir / f"{arch}.npz"

    @property
    def runs(self) -> Path:
        return Path("runs") / self.configuration

    @property
    def train_logs(self) -> Path:
        return self.runs / "train"

    @property
    def evals(self) -> Path:
        return self.runs / "eval"

    def checkpoints(self, run: str) -> Path:
        return self.runs / "checkpoints" / run

    def resume_dir(self, run: str) -> Path:
        """A training job's work in progress (per-epoch state, best checkpoint so far); not an output."""
        return self.runs / "resume" / run

    def train_steps(self, run: str) -> Path:
        return self.train_logs / run / "steps.csv"

    def train_epochs(self, run: str) -> Path:
        return self.train_logs / run / "epochs.csv"

    def train_summary(self, run: str) -> Path:
        return self.train_logs / run / "summary.json"

    def evaluation(self, run: str) -> Path:
        return self.evals / run / "metrics.json"

    def predictions(self, run: str) -> Path:
        return self.evals / run / "predictions.npz"

    def attention(self, run: str) -> Path:
        return self.evals / run / "attention.json"

    def run_outputs(self, stage: str, run: str) -> list[Path]:
        if stage == "train":
            return [self.checkpoints(run), self.train_steps(run), self.train_epochs(run), self.train_summary(run)]
        return [self.evaluation(run), self.predictions(run), self.attention(run)]

    @property
    def reports(self) -> Path:
        return Path("reports") / self.configuration

    @property
    def report(self) -> Path:
        return self.reports / "index.html"

    @property
    def provenance(self) -> Path:
        """The report's manifest: artifacts, commit, versions, wall times."""
        return self.reports / "provenance.json"

    @property
    def comparison_table(self) -> Path:
        return self.reports / "comparison.json"

    def executed_notebook(self, name: str) -> Path:
        return self.reports / "notebooks" / f"{name}.ipynb"

    def notebook_html(self, name: str) -> Path:
        return self.reports / "notebooks" / f"{name}.html"

    def notebook_figure(self, name: str) -> Path:
        return self.reports / "figures" / f"{name}.png"

    def notebook_reads(self, name: str, runs: list[str]) -> list[Path]:
        """The run artifacts a notebook reads."""
        kinds = {
            "learning_curves": (self.train_steps, self.train_epochs, self.train_summary),
            "predictions": (self.predictions,),
            "comparison": (self.train_steps, self.train_epochs, self.train_summary, self.evaluation, self.attention),
            "diagnostics": (self.attention,),
        }[name]
        return [kind(r) for r in runs for kind in kinds]

    def notebook_writes(self, name: str) -> list[Path]:
        """What a notebook writes: the executed notebook, its HTML, its figure, and the comparison's table."""
        table = [self.comparison_table] if name == "comparison" else []
        return [self.executed_notebook(name), self.notebook_html(name), *table, self.notebook_figure(name)]

    def report_inputs(self, archs: list[str], runs: list[str]) -> list[Path]:
        """Everything the report stage reads: the notebooks' outputs and, for the provenance
        manifest, every artifact of the runs and the prepared data."""
        return (
            [self.prepared(a) for a in archs]
            + [p for r in runs for stage in ("train", "evaluate") for p in self.run_outputs(stage, r)]
            + [p for n in NOTEBOOKS for p in self.notebook_writes(n)]
        )

    def log(self, stage: str, target: str | None = None) -> Path:
        """Each stage (and each tool but pull and dvc-yaml) copies its terminal output here."""
        # The data stage's output is shared by the profile's configurations, and so is its log.
        folder = self.profile if stage == "data" else self.configuration
        return Path("logs") / folder / stage / f"{target or stage}.log"

    def benchmark(self, stage: str, target: str) -> Path:
        """What Snakemake measured of a job (wall and CPU time, max_rss), beside its log."""
        return self.log(stage, target).with_suffix(".benchmark.tsv")


def layout(params: dict) -> Layout:
    """The paths of the configuration `params` describe (params.yaml with any overrides)."""
    from pipeline.dag import config

    return Layout(params["profile"], config.configuration(params))
