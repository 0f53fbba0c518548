"""Statistics over seeds: per-configuration summaries and Welch's test of an attention gain.

The gain of a variant is mean val acc (variant) - mean val acc (baseline), each over its seeds.
Its 95% interval and p-value come from Welch's t-test (unequal variances, Welch-Satterthwaite
degrees of freedom). With fewer than two seeds on either side nothing can be judged.
"""

from __future__ import annotations

import math
import statistics

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
RULE = ("a claimed gain counts as reproduced when it lies inside our 95% confidence interval of the "
        "gain (Welch's t-test over seeds, variant minus baseline, same architecture and data)")


def summary(values: list[float]) -> dict:
    return {"n": len(values), "mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None}


def welch(variant: list[float], baseline: list[float]) -> dict:
    """Difference of means with its 95% interval and two-sided p-value; None fields if n < 2."""
    diff = statistics.fmean(variant) - statistics.fmean(baseline)
    result = {"diff": diff, "n_variant": len(variant), "n_baseline": len(baseline),
              "ci_low": None, "ci_high": None, "p_value": None, "df": None}
    if len(variant) < 2 or len(baseline) < 2:
        return result
    va, vb = statistics.variance(variant) / len(variant), statistics.variance(baseline) / len(baseline)
    se = math.sqrt(va + vb)
    if se == 0:  # identical runs: the difference is exact
        return {**result, "ci_low": diff, "ci_high": diff, "p_value": 1.0 if diff == 0 else 0.0, "df": math.inf}
    df = (va + vb) ** 2 / (va**2 / (len(variant) - 1) + vb**2 / (len(baseline) - 1))
    half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    p = 2 * scipy_stats.t.sf(abs(diff) / se, df)
    return {**result, "ci_low": diff - half, "ci_high": diff + half, "p_value": float(p), "df": df}


def verdict(test: dict, claimed_gain: float | None, comparable: bool) -> str:
    """One word and its reason, computed from the data by RULE."""
    if claimed_gain is None:
        return "no claim"
    if not comparable:
        return "not comparable (other data or recipe than the post)"
    if test["ci_low"] is None:
        return "cannot be judged (fewer than 2 seeds per side)"
    if test["ci_low"] <= claimed_gain <= test["ci_high"]:
        return "reproduced"
    return "not reproduced"
