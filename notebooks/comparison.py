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
# the scalar gate control and the fixed 0.5 scale, when they ran) with a 95% interval and Welch's
# t-test over seeds, the paired test and the power of our seeds, and a verdict on each claim; and
# where each variant starts training (first loss, logits' scale). Everything is written to
# reports/<configuration>/comparison.json and figures/comparison.png for the HTML report.

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/dag/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]
post_setting = None  # the post's recipe per architecture (config.post_setting); None: params.yaml's

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from pipeline.analysis import figures, render, verdict
from pipeline.core import atomic
from pipeline.dag import config, paths

layout = paths.Layout(profile, configuration)
post_setting = post_setting or config.post_setting(config.load())
table = verdict.build(profile, layout, runs, post_setting)
atomic.write_json(layout.comparison_table, table)
initial = table["initial_scale"]

# %% [markdown]
# ## Where each variant starts
# The first step's loss and the standard deviation of its logits, before any update (mean over
# seeds). A gate that starts at 0.5 after every layer shrinks the logits, and with them the loss.

# %%
archs = list(dict.fromkeys(r["arch"] for r in initial))
fig, axes = plt.subplots(2, max(1, len(archs)), figsize=(5.5 * max(1, len(archs)), 6.5), squeeze=False)
for column, arch in enumerate(archs):
    mine = [r for r in initial if r["arch"] == arch]
    names = [r["attention"] for r in mine]
    for row, (key, label) in enumerate((("loss", "first loss"), ("logit_std", "logits' std at step 0"))):
        ax = axes[row][column]
        ax.bar(names, [r[key] for r in mine], color="#4c72b0")
        ax.set(title=f"{arch}: {label}", ylabel=label)
        ax.tick_params(axis="x", rotation=45)
fig.tight_layout()
figures.save_figure(fig, layout.notebook_figure("comparison"))

# %% [markdown]
# ## Findings (generated from the numbers above)

# %%
display(Markdown("\n".join(f"- {f}" for f in table["findings"])))

# %%
HTML(render.table("comparison", table["rows"]))

# %% [markdown]
# Rule: a claimed gain counts as reproduced when it lies inside our 95% confidence interval of
# the gain (Welch's t-test over seeds). With one seed per side nothing is judged.

# %%
HTML(render.table("gains", table["gains"] + table["gate_controls"] + table["half_controls"]))

# %% [markdown]
# ## Every variant: which module, at what price

# %%
HTML(render.table("variants", table["variants"]))
