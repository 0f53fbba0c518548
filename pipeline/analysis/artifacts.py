"""Reading a run's artifacts back: what its training and evaluation wrote."""

from __future__ import annotations

import csv
import json

from pipeline.dag import config, paths


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_training(layout: paths.Layout, run: str) -> dict:
    """What a run's training wrote (paths.Layout.run_outputs("train")), with the run's name parsed."""
    experiment, seed = config.parse_run(run)
    arch, attention = config.split_experiment(experiment)
    return {
        "run": run, "experiment": experiment, "seed": seed, "arch": arch, "attention": attention,
        "train": json.loads(layout.train_summary(run).read_text()),
        "epochs": read_csv(layout.train_epochs(run)),
        "steps": read_csv(layout.train_steps(run)),
    }


def load_run(layout: paths.Layout, run: str) -> dict:
    """load_training and the run's evaluation metrics."""
    return {**load_training(layout, run), "eval": json.loads(layout.evaluation(run).read_text())}


def load_attention(layout: paths.Layout, run: str) -> dict:
    return json.loads(layout.attention(run).read_text())
