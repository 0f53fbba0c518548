"""The report's sentences: templates filled from the comparison, nothing typed in by hand."""

from __future__ import annotations

from pipeline.analysis.formats import points

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
