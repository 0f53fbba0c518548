"""Statistics over seeds: per-configuration summaries, tests of an attention gain, and power.

The gain of a variant is mean val acc (variant) - mean val acc (baseline), each over its seeds.
Its 95% interval and p-value come from Welch's t-test (unequal variances, Welch-Satterthwaite
degrees of freedom); the verdict uses it. Beside it, the paired t-test over the seeds both
sides ran: runs with one seed draw the same data order and augmentation, so the pairing can
only remove shared noise; the verdict does not use it, since the model initialisations differ
between variants and the pairing is not what the post's figures rest on. With fewer than two
seeds on either side nothing can be judged.

Power: the two-sided t-test at alpha 0.05 with n seeds per side, computed exactly from the
noncentral t distribution: power = P(T > t_crit) + P(T < -t_crit), T ~ nct(df, delta / se),
with df = 2n - 2 and se = sd * sqrt(2 / n) for two groups of n (sd pooled from the two sides),
df = n - 1 and se = sd / sqrt(n) for n pairs (sd of the differences).
"""

from __future__ import annotations

import math
import statistics

from scipy import optimize
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
ALPHA, POWER = 0.05, 0.80
RULE = ("a claimed gain counts as reproduced when it lies inside our 95% confidence interval of the "
        "gain (Welch's t-test over seeds, variant minus baseline, same architecture and data)")
TESTS = ("Welch's t-test over seeds decides the verdict. Beside it, the paired t-test over the seeds both sides "
         "ran (one seed draws the same data order and augmentation; it does not decide, since the initial weights "
         "differ between variants). Power: the two-sided t-test at alpha 0.05, exact from the noncentral t "
         "distribution, with the seed-to-seed standard deviation pooled over the two configurations")


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


def paired(variant: dict[int, float], baseline: dict[int, float]) -> dict:
    """The paired t-test over the seeds both sides ran (seed -> val acc): mean difference, 95%
    interval, two-sided p-value; None fields with fewer than two pairs."""
    seeds = sorted(set(variant) & set(baseline))
    diffs = [variant[s] - baseline[s] for s in seeds]
    result = {"diff": statistics.fmean(diffs) if diffs else None, "n_pairs": len(seeds),
              "ci_low": None, "ci_high": None, "p_value": None, "sd": None}
    if len(seeds) < 2:
        return result
    sd = statistics.stdev(diffs)
    if sd == 0:  # every pair differs by the same amount: the difference is exact
        return {**result, "ci_low": result["diff"], "ci_high": result["diff"], "sd": 0.0,
                "p_value": 1.0 if result["diff"] == 0 else 0.0}
    test = scipy_stats.ttest_rel([variant[s] for s in seeds], [baseline[s] for s in seeds])
    ci = test.confidence_interval(CONFIDENCE)
    return {**result, "ci_low": float(ci.low), "ci_high": float(ci.high), "p_value": float(test.pvalue), "sd": sd}


def power(effect: float, sd: float, n: int, pairs: bool = False) -> float:
    """Power of the two-sided t-test at ALPHA to detect `effect`, with n seeds per side (or n pairs)."""
    df, se = (n - 1, sd / math.sqrt(n)) if pairs else (2 * n - 2, sd * math.sqrt(2 / n))
    crit = scipy_stats.t.ppf(1 - ALPHA / 2, df)
    noncentrality = effect / se
    # The wrong-sign tail; SciPy's series returns NaN for it far out (below 1e-10 there).
    wrong_sign = float(scipy_stats.nct.cdf(-crit, df, noncentrality))
    return float(scipy_stats.nct.sf(crit, df, noncentrality)) + (0.0 if math.isnan(wrong_sign) else wrong_sign)


def detectable_gain(sd: float, n: int, pairs: bool = False) -> float | None:
    """The smallest gain the test detects with POWER at n seeds per side (n pairs); None if n < 2
    or there is no spread to go by."""
    if n < 2 or not sd:
        return None
    high = sd
    while power(high, sd, n, pairs) < POWER:  # bracket the root; far out the noncentral t is NaN
        high *= 2
    return float(optimize.brentq(lambda effect: power(effect, sd, n, pairs) - POWER, 0.0, high))


def seeds_needed(effect: float, sd: float, pairs: bool = False, most: int = 10_000) -> int | None:
    """The fewest seeds per side (pairs) that detect `effect` with POWER; None beyond `most`."""
    if not sd:
        return 2
    for n in range(2, most + 1):
        if power(abs(effect), sd, n, pairs) >= POWER:
            return n
    return None


def pooled_sd(a: list[float], b: list[float]) -> float | None:
    """The seed-to-seed standard deviation of two configurations, pooled (None below two seeds each)."""
    if len(a) < 2 or len(b) < 2:
        return None
    return math.sqrt(((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b))
                     / (len(a) + len(b) - 2))
