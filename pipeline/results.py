"""Reading run artifacts back, and the claimed-vs-ours comparison the notebooks and report show."""

from __future__ import annotations

import csv
import json
import statistics

from pipeline import config, paths
from pipeline.claims import CLAIMS


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def load_run(run: str) -> dict:
    experiment, seed = config.parse_run(run)
    arch, attention = config.split_experiment(experiment)
    return {
        "run": run, "experiment": experiment, "seed": seed, "arch": arch, "attention": attention,
        "train": json.loads(paths.train_summary(run).read_text()),
        "eval": json.loads(paths.evaluation(run).read_text()),
        "epochs": read_csv(paths.train_epochs(run)),
        "steps": read_csv(paths.train_steps(run)),
    }


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def comparison(runs: list[dict]) -> list[dict]:
    """One row per configuration: our figures (mean over seeds) beside the post's claim."""
    rows = []
    for experiment in dict.fromkeys(r["experiment"] for r in runs):
        mine = [r for r in runs if r["experiment"] == experiment]
        claim = CLAIMS.get(experiment, {})
        ours = {
            "train_acc": _mean([r["train"]["final_train_acc"] for r in mine]),
            "val_acc": _mean([r["eval"]["val_acc"] for r in mine]),
            "params": mine[0]["eval"]["params"]["total"],
            "throughput_img_s": _mean([r["eval"]["throughput_img_s"] for r in mine]),
        }
        rows.append({
            "experiment": experiment, "arch": mine[0]["arch"], "attention": mine[0]["attention"],
            "seeds": [r["seed"] for r in mine], "dataset": mine[0]["train"]["dataset"],
            "claim_dataset": claim.get("dataset"), "ours": ours,
            "claim": {k: claim.get(k) for k in ours},
            "difference": {k: (ours[k] - claim[k]) if claim.get(k) is not None else None for k in ours},
        })
    return rows


def na_gains(rows: list[dict]) -> list[dict]:
    """Val-accuracy gain of each attention variant over its architecture's baseline, ours and claimed."""
    by_key = {(r["arch"], r["attention"]): r for r in rows}
    gains = []
    for r in rows:
        base = by_key.get((r["arch"], "none"))
        if r["attention"] == "none" or base is None:
            continue
        claimed = None
        if r["claim"]["val_acc"] is not None and base["claim"]["val_acc"] is not None:
            claimed = r["claim"]["val_acc"] - base["claim"]["val_acc"]
        gains.append({"arch": r["arch"], "attention": r["attention"], "dataset": r["dataset"],
                      "ours": r["ours"]["val_acc"] - base["ours"]["val_acc"], "claim": claimed})
    return gains


def _fmt(value, kind: str) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if kind == "acc" else f"{value:,.0f}"


def _signed(value, kind: str) -> str:
    return "–" if value is None else ("+" if value >= 0 else "−") + _fmt(abs(value), kind)


COLUMNS = (("train_acc", "train acc", "acc"), ("val_acc", "val acc", "acc"),
           ("params", "params", "count"), ("throughput_img_s", "img/s", "count"))


def comparison_html(rows: list[dict], gains: list[dict]) -> str:
    """The claimed-vs-ours table and the NA-gain table, as plain HTML (notebook and report)."""
    head = "".join(f"<th>{label}<br>ours</th><th>post</th><th>diff</th>" for _, label, _ in COLUMNS)
    body = ""
    for r in rows:
        cells = "".join(
            f"<td>{_fmt(r['ours'][k], kind)}</td><td class='claim'>{_fmt(r['claim'][k], kind)}</td>"
            f"<td>{_signed(r['difference'][k], kind)}</td>"
            for k, _, kind in COLUMNS
        )
        body += (f"<tr><td>{r['experiment']}</td><td>{r['dataset']} / {r['claim_dataset'] or '–'}</td>"
                 f"<td>{len(r['seeds'])}</td>{cells}</tr>")
    gain_rows = "".join(
        f"<tr><td>{g['arch']}</td><td>{g['attention']}</td><td>{g['dataset']}</td>"
        f"<td>{_signed(g['ours'], 'acc')}</td><td class='claim'>{_signed(g['claim'], 'acc')}</td></tr>"
        for g in gains
    )
    return (
        "<table class='comparison'><tr><th>configuration</th><th>data<br>ours / post</th><th>seeds</th>"
        f"{head}</tr>{body}</table>"
        "<table class='gains'><tr><th>architecture</th><th>attention</th><th>data</th>"
        f"<th>val-acc gain over baseline, ours</th><th>claimed gain</th></tr>{gain_rows}</table>"
    )
