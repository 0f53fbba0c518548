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
# parameter count and inference throughput (means over seeds), beside the figures the blog
# post claims. The table is written to reports/comparison.json for the HTML report.

# %% tags=["parameters"]
profile = "demo"
experiments = ["alexnet-none", "alexnet-na-blog", "resnet18-none", "resnet18-na-blog"]
seeds = [42]
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
from IPython.display import HTML

from pipeline import atomic, claims, paths, results

loaded = [results.load_run(r) for r in runs]
rows = results.comparison(loaded)
gains = results.na_gains(rows)
atomic.write_json(paths.COMPARISON_TABLE, {
    "profile": profile, "claim_source": claims.SOURCE, "claim_throughput_setup": claims.THROUGHPUT_SETUP,
    "eval_device": sorted({r["eval"]["device"] for r in loaded}), "rows": rows, "gains": gains,
})

HTML(results.comparison_html(rows, gains))
