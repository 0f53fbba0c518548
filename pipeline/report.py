"""Stage `report`: one self-contained reports/index.html (inline CSS, images embedded as data URIs).

This module only gathers: the comparison table from reports/comparison.json (the comparison
notebook's output), figures from the notebooks, run details from runs/*/*.json, the provenance
manifest (pipeline/analysis/provenance.py, also written to reports/provenance.json) and, if it was run, the
benchmark's JSON. pipeline/analysis/templates/report.html.j2 lays the page out. Only the post's claimed
figures come from pipeline/analysis/claims.py, and they are labelled as the claim.
"""

from __future__ import annotations

import base64
import datetime
import json
import shlex
import time

from pipeline.analysis import artifacts, bench_tables, provenance, render
from pipeline.analysis.claims import CLAIMS
from pipeline.core import atomic, stage
from pipeline.dag import config, paths


def versions_text(versions: dict) -> str:
    paddle = versions["paddle"] or {}
    build = (f"CUDA {paddle['cuda']}, cuDNN {paddle['cudnn']}" if paddle.get("cuda") else "CPU build")
    named = {"Python": versions["python"],
             "PaddlePaddle": f"{paddle['version']} ({build}, commit {paddle['commit'][:10]})" if paddle else None,
             **{k: v for k, v in versions.items() if k not in ("python", "paddle")}}
    return ", ".join(f"{k} {v or 'not installed'}" for k, v in named.items())


def precision(summary: dict) -> str:
    """What a run trained in, and what it asked for when that differs (amp on a CPU, or bf16 that
    Paddle turned off on a GPU without it)."""
    asked, got = summary["amp"], summary["precision"]
    return got if asked == got else f"{got} (amp={asked} asked)"


def data_uri(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def image_sizes(settings: dict) -> str:
    size = settings["image_size"]
    return " / ".join(f"{v} px ({k})" for k, v in size.items()) if isinstance(size, dict) else f"{size} px"


def reproduce(overrides: list[str]) -> dict:
    """The command lines that rebuild this configuration, overrides included."""
    if not overrides:
        return {"snakemake": "snakemake --cores 4 all", "dvc": "dvc repro"}
    quoted = [shlex.quote(o) for o in overrides]
    return {"snakemake": "snakemake --cores 4 all --config " + " ".join(quoted),
            "dvc": "dvc exp run " + " ".join(f"-S {o}" for o in quoted)}


def claimed(gains: list[dict], rows: list[dict]) -> list[dict]:
    """The gains the post made a claim about, with the claim's own before and after, and its dataset."""
    claim_dataset = {r["experiment"]: r["claim_dataset"] for r in rows}
    out = []
    for g in gains:
        if g["claim"] is None:
            continue
        before, after = (CLAIMS[f"{g['arch']}-{a}"] for a in ("none", g["attention"]))
        out.append({**g, "claim_dataset": claim_dataset[f"{g['arch']}-{g['attention']}"],
                    "claim_from": before["val_acc"], "claim_to": after["val_acc"]})
    return out


def run_row(r: dict) -> list:
    t, e = r["train"], r["eval"]
    return [r["run"], t["dataset"], t["image_size"], f"{t['train_images']:,}", f"{t['val_images']:,}", t["epochs"],
            t["best_epoch"], precision(t), f"{e['val_acc']:.4f}", f"{e['throughput_img_s']:,.0f}",
            f"{t['seconds']:,.0f}"]


def main(params: dict) -> None:
    started = time.perf_counter()
    settings = config.profile_settings(params)
    layout = paths.layout(params)
    table = json.loads(layout.comparison_table.read_text())
    loaded = [artifacts.load_run(layout, r) for r in config.runs(params)]
    manifest = provenance.build(params, layout, loaded, started)
    atomic.write_json(layout.provenance, manifest)
    overrides = config.cli_overrides(params)
    git, versions = manifest["git"], versions_text(manifest["versions"])
    meta = [
        ("profile", params["profile"]),
        ("configuration", layout.configuration + (f" (overrides: {' '.join(overrides)})" if overrides
                                                  else " (params.yaml as it is)")),
        ("datasets", ", ".join(f"{a}: {d}" for a, d in settings["datasets"].items())),
        ("device", "; ".join(manifest["devices"]["train"])),
        ("generated", datetime.datetime.fromisoformat(manifest["generated"]).strftime("%Y-%m-%d %H:%M UTC")),
        ("git commit", "unknown (not a git checkout)" if git["commit"] is None else
         f"{git['commit'][:10]} ({'with uncommitted changes to tracked files' if git['dirty'] else 'clean'})"),
        ("versions", versions),
    ]
    result_settings = [
        ("profile", manifest["params"]["profile"]), ("configuration", manifest["params"]["configuration"]),
        ("overrides", " ".join(manifest["params"]["overrides"]) or "none"),
        *((key, json.dumps(manifest["params"][key])) for key in ("archs", "attentions", "seeds")),
        *sorted((k, json.dumps(v) if isinstance(v, dict | list) else v)
                for k, v in manifest["params"]["settings"].items()),
    ]
    page = render.page(
        "report.html.j2", profile=params["profile"], configuration=layout.configuration, settings=settings,
        image_sizes=image_sizes(settings), datasets=", ".join(sorted(set(settings["datasets"].values()))),
        claimed=claimed(table["gains"], table["rows"]), meta=meta, git=git, reproduce=reproduce(overrides), table=table,
        figures={n: data_uri(layout.notebook_figure(n)) for n in paths.NOTEBOOKS},
        runs=[run_row(r) for r in loaded], notebooks=paths.NOTEBOOKS,
        bench=bench_tables.tables(json.loads(paths.BENCH_JSON.read_text())) if paths.BENCH_JSON.exists() else None,
        bench_path=str(paths.BENCH_JSON), manifest=manifest, provenance_path=str(layout.provenance),
        versions=versions, result_settings=result_settings,
    )
    atomic.write_text(layout.report, page)
    print(f"report: {layout.report} and {layout.provenance}")


if __name__ == "__main__":
    stage.run("report", main)
