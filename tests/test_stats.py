"""The statistics code against SciPy and hand-computed values."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from pipeline import stats

VARIANT = [0.846, 0.851, 0.839, 0.848]
BASELINE = [0.797, 0.802, 0.790]


def test_welch_matches_scipy():
    got = stats.welch(VARIANT, BASELINE)
    ref = scipy_stats.ttest_ind(VARIANT, BASELINE, equal_var=False)
    assert got["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert got["df"] == pytest.approx(ref.df, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_welch_by_hand():
    # Two groups of two: means 3 and 1, variances 2 and 2 -> se = sqrt(2/2 + 2/2) = sqrt(2), df = 2.
    got = stats.welch([2.0, 4.0], [0.0, 2.0])
    assert got["diff"] == 2.0 and got["df"] == pytest.approx(2.0)
    half = 4.302652729911275 * math.sqrt(2)  # t(0.975, 2) from tables
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert got["p_value"] == pytest.approx(0.2928932188, rel=1e-6)  # 2 * (1 - T2(sqrt 2))


def test_one_seed_cannot_be_judged():
    got = stats.welch([0.85], [0.80])
    assert got["diff"] == pytest.approx(0.05) and got["ci_low"] is None and got["p_value"] is None
    assert stats.verdict(got, 0.049, comparable=True).startswith("cannot be judged")


def test_verdicts_follow_the_rule():
    test = stats.welch(VARIANT, BASELINE)
    assert stats.verdict(test, 0.04915, comparable=True) == "reproduced"
    assert stats.verdict(test, 0.0, comparable=True) == "not reproduced"
    assert stats.verdict(test, 0.04915, comparable=False).startswith("not comparable")
    assert stats.verdict(test, None, comparable=True) == "no claim"


def test_summary():
    assert stats.summary([1.0, 2.0, 3.0]) == {"n": 3, "mean": 2.0, "sd": 1.0}
    assert stats.summary([0.5])["sd"] is None
