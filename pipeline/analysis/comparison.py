"""Our runs beside the post's claims: per configuration, the gains with their tests and power, what
each variant costs, where training starts, and what the trained na-blog layers compute."""

from __future__ import annotations

import statistics

from pipeline.analysis import stats
from pipeline.analysis.claims import CLAIMS


def comparable(run: dict, post: dict[str, dict]) -> bool:
    """Whether a run followed the post's setting (config.post_setting) closely enough to test its claim."""
    return all(run["train"].get(key) == value for key, value in post[run["arch"]].items())


def comparison(runs: list[dict], post: dict[str, dict]) -> list[dict]:
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
            "claim_dataset": post[mine[0]["arch"]]["dataset"] if claim else None,
            "comparable": all(comparable(r, post) for r in mine),
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
