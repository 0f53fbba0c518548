"""The verdict on the post's claims, in one call: `build(profile, layout, runs)` reads a
configuration's run artifacts and returns everything reports/<configuration>/comparison.json holds
(the comparison notebook writes it, the report reads it): per configuration our figures beside the
claim, each variant's gain over the baseline, the gate and the half controls with their tests,
power and verdict, what each variant costs, where training starts, what the trained na-blog layers
compute, and the findings in words."""

from __future__ import annotations

from pipeline.analysis import artifacts, claims, comparison, findings, stats
from pipeline.dag import paths


def build(profile: str, layout: paths.Layout, run_names: list[str], post: dict[str, dict]) -> dict:
    """`post`: the post's setting per architecture (config.post_setting)."""
    loaded = [artifacts.load_run(layout, r) for r in run_names]
    rows = comparison.comparison(loaded, post)
    vs_baseline = comparison.gains(rows, against="none")
    vs_gate = comparison.gains(rows, against="gate")
    vs_half = comparison.gains(rows, against="half")
    degeneracy = comparison.na_blog_degeneracy([artifacts.load_attention(layout, r) for r in run_names])
    initial = comparison.initial_scale(loaded)
    return {
        "profile": profile, "claim_source": claims.SOURCE, "claim_throughput_setup": claims.THROUGHPUT_SETUP,
        "eval_device": sorted({r["eval"]["device"] for r in loaded}),
        "eval_engine": sorted({r["eval"].get("inference", "eager paddle") for r in loaded}),
        "rule": stats.RULE, "test": stats.TESTS, "scale_rule": findings.SCALE_RULE,
        "rows": rows, "gains": vs_baseline, "gate_controls": vs_gate, "half_controls": vs_half,
        "initial_scale": initial, "variants": comparison.variants(rows, vs_baseline), "na_blog": degeneracy,
        "findings": (findings.findings(profile, rows, vs_baseline, vs_gate, degeneracy)
                     + findings.scale_findings(initial, vs_half)),
    }
