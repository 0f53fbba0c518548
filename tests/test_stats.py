"""The statistics code against SciPy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pipeline.analysis import stats

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


# ---- paired test and power, against SciPy and statsmodels -----------------------------------------

def test_paired_test_matches_scipy_over_the_seeds_both_sides_ran():
    variant = {42: 0.846, 43: 0.851, 44: 0.839, 45: 0.848}
    baseline = {42: 0.797, 43: 0.809, 44: 0.786}  # seed 45 has no partner
    got = stats.paired(variant, baseline)
    ref = scipy_stats.ttest_rel([0.846, 0.851, 0.839], [0.797, 0.809, 0.786])
    ci = ref.confidence_interval(0.95)
    assert got["n_pairs"] == 3 and got["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (got["ci_low"], got["ci_high"]) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert stats.paired({42: 0.8}, {42: 0.7})["ci_low"] is None  # one pair judges nothing


def test_power_matches_statsmodels():
    from statsmodels.stats.power import TTestIndPower, TTestPower

    for effect, sd, n in ((0.0491, 0.01, 2), (0.0109, 0.006, 3), (0.02, 0.015, 5), (0.005, 0.004, 10)):
        assert stats.power(effect, sd, n) == pytest.approx(
            TTestIndPower().power(effect_size=effect / sd, nobs1=n, alpha=0.05), rel=1e-6)
        assert stats.power(effect, sd, n, pairs=True) == pytest.approx(
            TTestPower().power(effect_size=effect / sd, nobs=n, alpha=0.05), rel=1e-6)


def test_detectable_gain_and_seeds_needed_match_statsmodels():
    from statsmodels.stats.power import TTestIndPower, TTestPower

    sd = 0.006
    for n in (2, 3, 5, 10):
        d = TTestIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8)
        assert stats.detectable_gain(sd, n) == pytest.approx(d * sd, rel=1e-5)
        d = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8)
        assert stats.detectable_gain(sd, n, pairs=True) == pytest.approx(d * sd, rel=1e-5)
    sd = 0.02  # statsmodels' solver does not converge at a few seeds; it needs a wide spread
    for gain in (0.0491, 0.0109, 0.004):  # the post's AlexNet and ResNet18 gains, and a small one
        n = TTestIndPower().solve_power(effect_size=gain / sd, alpha=0.05, power=0.8)
        assert stats.seeds_needed(gain, sd) == max(2, math.ceil(float(np.ravel(n)[0])))
        n = TTestPower().solve_power(effect_size=gain / sd, alpha=0.05, power=0.8)
        assert stats.seeds_needed(gain, sd, pairs=True) == max(2, math.ceil(float(np.ravel(n)[0])))
    assert stats.detectable_gain(sd, 1) is None and stats.detectable_gain(0.0, 4) is None


def test_pooled_sd():
    assert stats.pooled_sd([1.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(math.sqrt((2 + 8) / 3))
    assert stats.pooled_sd([1.0], [2.0, 3.0]) is None


def test_gains_carry_the_paired_test_and_the_power_and_the_findings_say_it():
    from pipeline.analysis import comparison, findings

    def row(attention, accs, claim):
        return {"arch": "alexnet", "attention": attention, "dataset": "cifar10", "comparable": True,
                "seeds": [42, 43, 44], "val_accs": accs, "claim": {"val_acc": claim}}
    rows = [row("none", [0.797, 0.809, 0.786], 0.7967), row("na-blog", [0.846, 0.851, 0.839], 0.8458)]
    (gain,) = comparison.gains(rows)
    assert gain["paired"]["n_pairs"] == 3
    assert gain["paired"]["p_value"] == pytest.approx(
        scipy_stats.ttest_rel([0.846, 0.851, 0.839], [0.797, 0.809, 0.786]).pvalue)
    sd = stats.pooled_sd([0.846, 0.851, 0.839], [0.797, 0.809, 0.786])
    assert gain["power"] == {"sd": sd, "n": 3, "detectable": stats.detectable_gain(sd, 3),
                             "seeds_for_claim": stats.seeds_needed(0.8458 - 0.7967, sd)}
    text = " ".join(findings.findings("paper", rows, [gain], [], None))
    assert f"the smallest gain Welch's test detects with 80% power is {100 * gain['power']['detectable']:.2f}" in text
    from pipeline.analysis import render

    html = render.table("gains", [gain])
    assert "paired by seed" in html and "seeds the claim needs" in html


def test_initial_scale_and_the_half_control_findings():
    from pipeline.analysis import comparison, findings

    def run(attention, seed, loss, logit_std, acc):
        return {"experiment": f"alexnet-{attention}", "arch": "alexnet", "attention": attention, "seed": seed,
                "train": {"initial": {"loss": loss, "logit_std": logit_std}}, "acc": acc}
    runs = [run("none", 42, 6.6, 4.0, 0.79), run("none", 43, 6.4, 3.8, 0.80),
            run("na-blog", 42, 2.31, 0.05, 0.846), run("na-blog", 43, 2.30, 0.04, 0.851),
            run("half", 42, 2.35, 0.13, 0.845), run("half", 43, 2.33, 0.12, 0.852)]
    initial = comparison.initial_scale(runs)
    assert [(r["attention"], r["seeds"]) for r in initial] == [("none", 2), ("na-blog", 2), ("half", 2)]
    assert initial[0]["loss"] == pytest.approx(6.5) and initial[1]["logit_std"] == pytest.approx(0.045)

    def row(attention, accs):
        return {"arch": "alexnet", "attention": attention, "dataset": "cifar10", "comparable": True,
                "seeds": [42, 43], "val_accs": accs, "claim": {"val_acc": None}}
    rows = [row("none", [0.79, 0.80]), row("na-blog", [0.846, 0.851]), row("half", [0.845, 0.852])]
    text = " ".join(findings.scale_findings(initial, comparison.gains(rows, against="half")))
    assert "standard deviation is 3.900 without attention and 0.045 with na-blog, and 0.125 with half" in text
    assert "na-blog against half" in text and "explained by the initial scale" in text
    better = [row("none", [0.79, 0.80]), row("na-blog", [0.90, 0.901]), row("half", [0.845, 0.846])]
    text = " ".join(findings.scale_findings(initial, comparison.gains(better, against="half")))
    assert "the initial scale alone does not explain its difference from the baseline" in text
    assert "add half" in " ".join(findings.scale_findings(initial[:2], []))


def test_one_table_for_every_variant_says_which_module_at_what_price():
    from pipeline.analysis import comparison

    def row(attention, accs, params, seconds, claim=None):
        return {"arch": "alexnet", "attention": attention, "dataset": "cifar10", "comparable": True,
                "seeds": [42, 43], "val_accs": accs, "claim": {"val_acc": claim}, "train_seconds": seconds,
                "ours": {"params": params}, "spread": {"val_acc": stats.summary(accs)}}
    rows = [row("none", [0.79, 0.80], 1000, 100.0, claim=0.7967), row("na-blog", [0.846, 0.851], 1010, 130.0, 0.8458),
            row("se", [0.70, 0.71], 1500, 110.0), row("simam", [0.794, 0.797], 1000, 120.0)]
    table = {v["attention"]: v for v in comparison.variants(rows, comparison.gains(rows))}
    assert table["none"]["verdict"] == "baseline" and table["none"]["params_added"] == 0
    assert table["na-blog"]["params_added"] == 10 and table["na-blog"]["train_cost"] == pytest.approx(0.30)
    assert table["na-blog"]["verdict"] in ("reproduced", "not reproduced")  # the post's claim decides
    assert table["se"]["verdict"] == "worse than the baseline" and table["se"]["params_added"] == 500
    assert table["simam"]["verdict"] == "no difference our seeds detect"
    from pipeline.analysis import render

    html = render.table("variants", list(table.values()))
    assert "+30.0%" in html and "500" in html and "which" not in html


def write_run(layout, run: str, val_acc: float, dataset: str = "cifar10", epochs: int = 50) -> None:
    """The artifacts a run's training and evaluation write, as the stages lay them out."""
    import json

    summary = {"dataset": dataset, "image_size": 128, "epochs": epochs, "train_images": 50_000, "train_subset": None,
               "final_train_acc": val_acc + 0.01, "seconds": 100.0, "initial": {"loss": 2.3, "logit_std": 0.1}}
    metrics = {"val_acc": val_acc, "params": {"total": 1000}, "throughput_img_s": 500.0, "device": "cpu"}
    files = {layout.train_summary(run): json.dumps(summary), layout.evaluation(run): json.dumps(metrics),
             layout.train_epochs(run): "epoch,val_acc\n1,0.5\n", layout.train_steps(run): "step,loss\n1,2.3\n",
             layout.attention(run): json.dumps({"attention": run.split("-s")[0].split("-", 1)[1], "layers": []})}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(("na_blog", "epochs", "expected"), [
    pytest.param([0.846, 0.851, 0.839], 50, "reproduced", id="the-claimed-gain-inside-our-interval"),
    pytest.param([0.797, 0.809, 0.787], 50, "not reproduced", id="no-gain"),
    pytest.param([0.846, 0.851, 0.839], 3, "not comparable", id="a-shortened-recipe"),
])
def test_the_verdict_on_a_claim_from_the_runs_artifacts(tmp_path, monkeypatch, na_blog, epochs, expected):
    """verdict.build, the comparison notebook's one call, on run files laid out as the stages write them."""
    from pipeline.analysis import verdict
    from pipeline.dag import config, paths
    from tests.conftest import ROOT

    post = config.post_setting(config.load(path=ROOT / "params.yaml"))  # the paper profile: the post's recipe
    monkeypatch.chdir(tmp_path)
    layout = paths.Layout("paper", "paper")
    runs = []
    for attention, accs in (("none", [0.797, 0.809, 0.786]), ("na-blog", na_blog)):
        for seed, acc in zip((42, 43, 44), accs, strict=True):
            runs.append(f"alexnet-{attention}-s{seed}")
            write_run(layout, runs[-1], acc, epochs=epochs)
    table = verdict.build("paper", layout, runs, post)
    (gain,) = table["gains"]
    assert gain["claim"] == pytest.approx(0.84583 - 0.79668)  # the post's, from pipeline/analysis/claims.py
    assert gain["verdict"].startswith(expected), gain["verdict"]
    assert [r["experiment"] for r in table["rows"]] == ["alexnet-none", "alexnet-na-blog"]
    assert any(f"Verdict: {gain['verdict']}." in f for f in table["findings"]), table["findings"]
