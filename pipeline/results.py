"""Reading run artifacts back, and the claimed-vs-ours comparison the notebooks and report show."""

from __future__ import annotations

import csv
import json
import statistics

from pipeline import atomic, config, paths, stats
from pipeline.claims import CLAIMS
from pipeline.formats import points


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


def comparable(run: dict, claim: dict) -> bool:
    """Whether a run followed the post's setting closely enough to test its claim."""
    t = run["train"]
    return (claim.get("dataset") == t["dataset"] and t["image_size"] == 128 and t["epochs"] == 50
            and t["train_images"] == 50_000)


def comparison(runs: list[dict]) -> list[dict]:
    """One row per configuration: our figures (mean over seeds) beside the post's claim."""
    rows = []
    for experiment in dict.fromkeys(r["experiment"] for r in runs):
        mine = [r for r in runs if r["experiment"] == experiment]
        claim = CLAIMS.get(experiment, {})
        train_acc = stats.summary([r["train"]["final_train_acc"] for r in mine])
        val_acc = stats.summary([r["eval"]["val_acc"] for r in mine])
        ours = {
            "train_acc": train_acc["mean"], "val_acc": val_acc["mean"],
            "params": mine[0]["eval"]["params"]["total"],
            "throughput_img_s": statistics.fmean([r["eval"]["throughput_img_s"] for r in mine]),
        }
        rows.append({
            "experiment": experiment, "arch": mine[0]["arch"], "attention": mine[0]["attention"],
            "seeds": [r["seed"] for r in mine], "dataset": mine[0]["train"]["dataset"],
            "claim_dataset": claim.get("dataset"), "comparable": all(comparable(r, claim) for r in mine),
            "ours": ours, "spread": {"train_acc": train_acc, "val_acc": val_acc},
            "val_accs": [r["eval"]["val_acc"] for r in mine],
            "train_seconds": statistics.fmean(r["train"]["seconds"] for r in mine),
            "claim": {k: claim.get(k) for k in ours},
            "difference": {k: (ours[k] - claim[k]) if claim.get(k) is not None else None for k in ours},
        })
    # Throughput compares only as a ratio between configurations: the post timed its whole loader
    # loop on a V100, we time the predictor on pre-processed batches.
    base = {r["arch"]: r for r in rows if r["attention"] == "none"}
    for r in rows:
        b = base.get(r["arch"])
        r["throughput_ratio"] = {
            side: r[side]["throughput_img_s"] / b[side]["throughput_img_s"]
            if b and r is not b and r[side]["throughput_img_s"] and b[side]["throughput_img_s"] else None
            for side in ("ours", "claim")}
    return rows


def gains(rows: list[dict], against: str = "none") -> list[dict]:
    """Each attention variant against `against` on the same architecture: Welch test over seeds,
    the post's claimed gain (against the baseline only) and the verdict by stats.RULE."""
    by_key = {(r["arch"], r["attention"]): r for r in rows}
    out = []
    for r in rows:
        other = by_key.get((r["arch"], against))
        if r["attention"] in ("none", against) or other is None:
            continue
        claimed = None
        if against == "none" and r["claim"]["val_acc"] is not None and other["claim"]["val_acc"] is not None:
            claimed = r["claim"]["val_acc"] - other["claim"]["val_acc"]
        test = stats.welch(r["val_accs"], other["val_accs"])
        paired = stats.paired(dict(zip(r["seeds"], r["val_accs"], strict=True)),
                              dict(zip(other["seeds"], other["val_accs"], strict=True)))
        out.append({"arch": r["arch"], "attention": r["attention"], "against": against, "dataset": r["dataset"],
                    "test": test, "paired": paired, "claim": claimed, "power": power(r, other, claimed),
                    "verdict": stats.verdict(test, claimed, r["comparable"] and other["comparable"])})
    return out


def power(variant: dict, baseline: dict, claimed: float | None) -> dict:
    """What our seeds can detect: the pooled seed-to-seed sd of the two configurations, the smallest
    gain Welch's test finds with 80% power at our seeds per side, and the seeds the claimed gain needs."""
    sd = stats.pooled_sd(variant["val_accs"], baseline["val_accs"])
    n = min(len(variant["val_accs"]), len(baseline["val_accs"]))
    return {"sd": sd, "n": n, "detectable": stats.detectable_gain(sd, n) if sd else None,
            "seeds_for_claim": stats.seeds_needed(claimed, sd) if sd and claimed else None}


def _direction(test: dict) -> str:
    if test["ci_low"] is None:
        return "cannot be judged (fewer than 2 seeds per side)"
    if test["ci_low"] > 0:
        return "better than the baseline"
    if test["ci_high"] < 0:
        return "worse than the baseline"
    return "no difference our seeds detect"


def variants(rows: list[dict], gains_vs_baseline: list[dict]) -> list[dict]:
    """One row per variant that ran, baselines included: which module, at what price. Val acc over
    seeds, its gain over the baseline (Welch's 95% interval), the parameters it adds, its training
    time over the baseline's (from the runs' own summaries, same machine and recipe), and a verdict:
    the claim's where the post made one, else the direction of the interval."""
    gains = {(g["arch"], g["attention"]): g for g in gains_vs_baseline}
    base = {r["arch"]: r for r in rows if r["attention"] == "none"}
    out = []
    for r in rows:
        b, g = base.get(r["arch"]), gains.get((r["arch"], r["attention"]))
        verdict = "baseline" if r["attention"] == "none" else (
            g["verdict"] if g and g["claim"] is not None else _direction(g["test"]) if g else "no baseline ran")
        out.append({
            "arch": r["arch"], "attention": r["attention"], "dataset": r["dataset"], "n": len(r["val_accs"]),
            "mean": r["spread"]["val_acc"]["mean"], "sd": r["spread"]["val_acc"]["sd"],
            "gain": g["test"] if g else None,
            "params_added": r["ours"]["params"] - b["ours"]["params"] if b else None,
            "train_cost": r["train_seconds"] / b["train_seconds"] - 1 if b and b["train_seconds"] else None,
            "verdict": verdict,
        })
    return out


def initial_scale(runs: list[dict]) -> list[dict]:
    """Per configuration, where training started: the first step's loss and the standard deviation
    of its logits, before any update (mean over seeds; runs that did not record it are left out)."""
    rows = []
    for experiment in dict.fromkeys(r["experiment"] for r in runs):
        mine = [r for r in runs if r["experiment"] == experiment and r["train"].get("initial")]
        if mine:
            rows.append({"experiment": experiment, "arch": mine[0]["arch"], "attention": mine[0]["attention"],
                         "loss": statistics.fmean(r["train"]["initial"]["loss"] for r in mine),
                         "logit_std": statistics.fmean(r["train"]["initial"]["logit_std"] for r in mine),
                         "seeds": len(mine)})
    return rows


# When na-blog's difference from the baseline counts as explained by its initial scale.
SCALE_RULE = ("na-blog's difference from the baseline, gain or loss, is explained by its initial scale when it does "
              "no better than `half` (y = 0.5 x, fixed): the 95% Welch interval of na-blog minus half reaches zero "
              "or lies below it")


def scale_findings(initial: list[dict], gains_vs_half: list[dict]) -> list[str]:
    """Where each variant starts, and na-blog against the fixed 0.5 scale, by SCALE_RULE."""
    out = []
    by_key = {(r["arch"], r["attention"]): r for r in initial}
    for arch in dict.fromkeys(r["arch"] for r in initial):
        base, blog = by_key.get((arch, "none")), by_key.get((arch, "na-blog"))
        if base and blog:
            half = by_key.get((arch, "half"))
            also = f", and {half['logit_std']:.3f} with half" if half else ""
            out.append(f"{arch} at step 0: the logits' standard deviation is {base['logit_std']:.3f} without "
                       f"attention and {blog['logit_std']:.3f} with na-blog{also}; the first loss is "
                       f"{base['loss']:.3f} against {blog['loss']:.3f}.")
    for g in gains_vs_half:
        if g["attention"] != "na-blog":
            continue
        t = g["test"]
        if t["ci_low"] is None:
            verdict = "too few seeds to say whether the initial scale explains its gain"
        elif t["ci_low"] <= 0:
            verdict = ("it does no better than the fixed scale, so its difference from the baseline, gain or loss, "
                       "is explained by the initial scale")
        else:
            verdict = ("it does better than the fixed scale, so the initial scale alone does not explain its "
                       "difference from the baseline")
        out.append(f"{g['arch']}: na-blog against half (y = 0.5 x, its value at initialisation): "
                   f"{_test_text(t)}; {verdict}.")
    if initial and not gains_vs_half and any(r["attention"] == "na-blog" for r in initial):
        out.append("No half control ran beside na-blog; add half to `attentions` to test whether its initial "
                   "scale explains its gain.")
    return out


def na_blog_degeneracy(attention: list[dict]) -> dict | None:
    """What the trained na-blog layers actually compute, over every na-blog run."""
    layers = [layer for a in attention if a["attention"] == "na-blog" for layer in a["layers"]]
    if not layers:
        return None
    return {
        "layers": len(layers), "runs": sum(a["attention"] == "na-blog" for a in attention),
        "g_mean_min": min(x["g_mean"] for x in layers), "g_mean_max": max(x["g_mean"] for x in layers),
        "g_spread_max": max(x["g_spread"] for x in layers),
        "term_abs_max": max(max(-x["term_min"], x["term_max"]) for x in layers),
        "gamma_min": min(x["gamma"] for x in layers), "gamma_max": max(x["gamma"] for x in layers),
        "gate_min": min(x["gate_min"] for x in layers), "gate_max": max(x["gate_max"] for x in layers),
    }


def _test_text(test: dict) -> str:
    if test["ci_low"] is None:
        return (f"{points(test['diff'])} points from {test['n_variant']} and {test['n_baseline']} seed(s), "
                "too few to judge")
    return (f"{points(test['diff'])} points (95% CI {points(test['ci_low'])} to {points(test['ci_high'])}, "
            f"Welch p = {test['p_value']:.3f}, {test['n_variant']} and {test['n_baseline']} seeds)")


def findings(profile: str, rows: list[dict], gains_vs_baseline: list[dict], gains_vs_gate: list[dict],
             degeneracy: dict | None) -> list[str]:
    """The report's opening sentences: templates filled from the artifacts, nothing typed in by hand."""
    out = []
    if not any(r["comparable"] for r in rows):
        data = ", ".join(sorted({r["dataset"] for r in rows}))
        out.append(f"This is the {profile} profile: the runs trained on {data} with a shortened recipe, so the "
                   "post's claims are not tested here; the sentences below describe these runs only.")
    for g in gains_vs_baseline:
        if g["claim"] is None:
            continue
        out.append(f"{g['arch']} + {g['attention']} against its baseline on {g['dataset']}: {_test_text(g['test'])}; "
                   f"the post claims {points(g['claim'])} points. Verdict: {g['verdict']}.")
        p = g["power"]
        if p["detectable"] is not None:
            needed = (f"{p['seeds_for_claim']} seeds per side" if p["seeds_for_claim"]
                      else "more than 10,000 seeds per side")
            out.append(f"With {p['n']} seeds per side and a seed-to-seed standard deviation of {100 * p['sd']:.2f} "
                       f"points, the smallest gain Welch's test detects with 80% power is {100 * p['detectable']:.2f} "
                       f"points; the claimed {points(g['claim'])} needs {needed}.")
    if degeneracy:
        d = degeneracy
        out.append(
            f"In the {d['layers']} na-blog layers of {d['runs']} trained model(s), the context g averages "
            f"{d['g_mean_min']:.6f} to {d['g_mean_max']:.6f} and spreads at most {d['g_spread_max']:.1e} across "
            f"channels: it is a softmax summed over positions, 1 up to rounding. The normalised term that drives "
            f"the gate is that rounding, scaled up to at most ±{d['term_abs_max']:.3f}; training left gamma between "
            f"{d['gamma_min']:.3f} and {d['gamma_max']:.3f} (it starts at 1), so the gates stay within "
            f"{d['gate_min']:.3f} to {d['gate_max']:.3f}: in effect one learned scalar per layer.")
    blog_vs_gate = [g for g in gains_vs_gate if g["attention"] == "na-blog"]
    for g in blog_vs_gate:
        out.append(f"{g['arch']}: na-blog against the scalar gate control: {_test_text(g['test'])}.")
    if degeneracy and not blog_vs_gate:
        out.append("No gate control ran beside na-blog; add gate to `attentions` to test whether na-blog "
                   "does more than a learned scalar.")
    return out


def save_figure(fig, path) -> None:
    """A notebook's figure, written whole (reports/<configuration>/figures/<name>.png) for the report to embed."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
