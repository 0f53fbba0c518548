"""`python -m pipeline bench`'s results (reports/bench/bench.json) laid out as tables: printed as
Markdown by the bench and rendered as HTML by the report, from the same layout. Imports nothing
heavy, so the report stage reads the JSON without depending on the bench's code."""

from __future__ import annotations


def tables(r: dict) -> dict:
    """bench.json laid out for a reader: an intro line, tables (columns and rows of text), a closing
    line. The terminal's Markdown and the report's HTML are both rendered from this."""
    threads = r["machine"]["allotted_threads"]
    headline = [
        ["eval_speedup (predictor / eager, ResNet18 32 px)", f"{r['eval_speedup']}x"],
        ["data_speedup (ours / post's chain, per core, 32 -> 128 px)", f"{r['data_speedup']}x"],
        [f"thread_speedup ({threads} one-thread jobs side by side / one, AlexNet 128 px training)",
         f"{r['thread_speedup']}x"],
        [f"intra_op_speedup (one job, {threads} threads / 1)", f"{r['intra_op_speedup']}x"],
        ["noop_seconds (`snakemake --cores 4 all` with nothing to do)", f"{r['noop_seconds']}"],
        *([f"na_overhead {v} (AlexNet 128 px step)", f"{f:+.1%}"] for v, f in r["na_overhead"].items()),
    ]
    h, o = r["host_device"], r["pipeline_overhead"]
    return {
        "intro": (f"Measured {r['date']} on {r['machine']['cpu']} ({threads} threads allotted), "
                  f"Paddle {r['machine']['paddle']}; medians of {r['repeats']} repeats."),
        "tables": [
            {"columns": ["headline", "value"], "rows": headline},
            {"columns": ["data path (per core)", "post's chain img/s", "ours img/s", "ratio"],
             "rows": [[f"32 -> {d['size']} px", d["blog_img_s"], d["ours_img_s"], f"{d['ratio']}x"]
                      for d in r["data_path"]]},
            {"columns": ["training", "attention", "batch", "step ms", "img/s", "vs none"],
             "rows": [[f"{t['arch']} {t['size']} px", t["attention"], t["batch"], t["step_ms"], t["img_s"],
                       f"{t['overhead']:+.1%}"] for t in r["training"]]},
            {"columns": ["inference", "batch", "eager img/s", "predictor img/s", "ratio"],
             "rows": [[f"{i['arch']} {i['size']} px {i['attention']}", i["batch"], i["eager_img_s"],
                       i["compiled_img_s"], f"{i['ratio']}x"] for i in r["inference"]]},
            {"columns": ["cores (training)", "1 core img/s", "1 job, all threads", "ratio",
                         "1-thread jobs side by side", "ratio"],
             "rows": [[f"{t['arch']} {t['size']} px, {t['cores']} cores", t["one_core_img_s"], t["threads_img_s"],
                       f"{t['threads_ratio']}x", t["jobs_img_s"], f"{t['jobs_ratio']}x"] for t in r["threads"]]},
            {"columns": ["host and device (AlexNet, CPU)", "before", "after", "ratio"],
             "rows": [
                 [f"training step ms, {h['step_size']} px, batch {h['batch']}: read back every step / once per 10 "
                  "steps", h["step_ms_sync_every_step"], h["step_ms_sync_per_10_steps"], f"{h['step_ratio']}x"],
                 [f"validation s per epoch, {h['val_images']} images at {h['val_size']} px: prepared every epoch / "
                  "once per run", h["val_seconds_prepared_each_epoch"], h["val_seconds_prepared_once"],
                  f"{h['val_ratio']}x"],
                 ["of which preparing, s per 10,000 images (what a GPU waited for every epoch)",
                  h["val_prepare_seconds_per_10000"], 0, ""]]},
        ],
        "closing": (f"Pipeline overhead: not measured: {o['note']}." if "note" in o else
                    f"Pipeline overhead: no-op `snakemake --cores 4 all` {o['noop_seconds']} s, "
                    f"`dvc status` {o['dvc_status_seconds']} s."),
    }


def markdown(r: dict) -> str:
    laid_out = tables(r)
    lines = [laid_out["intro"]]
    for table in laid_out["tables"]:
        lines += ["", "| " + " | ".join(table["columns"]) + " |", "|" + "---|" * len(table["columns"])]
        lines += ["| " + " | ".join(map(str, row)) + " |" for row in table["rows"]]
    return "\n".join([*lines, "", laid_out["closing"]]) + "\n"
