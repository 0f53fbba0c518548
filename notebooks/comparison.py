# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Claimed against reproduced
# Per configuration: final-epoch train accuracy, validation accuracy of the best checkpoint,
# parameter count and inference throughput (mean ± standard deviation over seeds), beside the
# figures the blog post claims. Then each attention variant's gain over its baseline (and over
# the scalar gate control, when it ran) with a 95% interval and Welch's t-test over seeds, and a
# verdict on each claim. Everything is written to reports/comparison.json for the HTML report.

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
from IPython.display import HTML, Markdown, display

from pipeline import atomic, claims, paths, results, stats

layout = paths.Layout(profile, configuration)

loaded = [results.load_run(layout, r) for r in runs]
rows = results.comparison(loaded)
vs_baseline = results.gains(rows, against="none")
vs_gate = results.gains(rows, against="gate")
degeneracy = results.na_blog_degeneracy([results.load_attention(layout, r) for r in runs])
findings = results.findings(profile, rows, vs_baseline, vs_gate, degeneracy)
atomic.write_json(layout.comparison_table, {
    "profile": profile, "claim_source": claims.SOURCE, "claim_throughput_setup": claims.THROUGHPUT_SETUP,
    "eval_device": sorted({r["eval"]["device"] for r in loaded}),
    "eval_engine": sorted({r["eval"].get("inference", "eager paddle") for r in loaded}),
    "rule": stats.RULE, "test": stats.TESTS,
    "rows": rows, "gains": vs_baseline, "gate_controls": vs_gate, "na_blog": degeneracy, "findings": findings,
})

# %% [markdown]
# ## Findings (generated from the numbers above)

# %%
display(Markdown("\n".join(f"- {f}" for f in findings)))

# %%
HTML(results.comparison_html(rows))

# %% [markdown]
# Rule: a claimed gain counts as reproduced when it lies inside our 95% confidence interval of
# the gain (Welch's t-test over seeds). With one seed per side nothing is judged.

# %%
HTML(results.gains_html(vs_baseline + vs_gate))
