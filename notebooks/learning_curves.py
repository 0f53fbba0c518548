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
# # Learning curves
# Loss (top) and accuracy (bottom) per epoch, one column per architecture and one colour per
# attention variant. Each line is the mean over the variant's seeds: solid for the training
# figures of each epoch, dashed for validation. The shaded band around it spans the lowest to the
# highest seed (min–max over seeds, not a standard deviation: with two or three seeds the range
# is the honest summary); a variant with one seed has no band. The faint thin lines in the loss
# panels are the training loss logged every few steps, one per seed.

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/dag/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pipeline.analysis import artifacts, figures
from pipeline.dag import paths

layout = paths.Layout(profile, configuration)

loaded = [artifacts.load_training(layout, r) for r in runs]
archs = list(dict.fromkeys(r["arch"] for r in loaded))
attentions = list(dict.fromkeys(r["attention"] for r in loaded))
colours = dict(zip(attentions, plt.get_cmap("tab10").colors, strict=False))  # a colour each, from a palette of 10


def over_seeds(group: list[dict], key: str):
    """Per epoch, the mean, lowest and highest of `key` over the runs in `group` that reached it."""
    by_epoch = {}
    for run in group:
        for e in run["epochs"]:
            by_epoch.setdefault(int(e["epoch"]), []).append(e[key])
    epochs = sorted(by_epoch)
    values = [np.array(by_epoch[e]) for e in epochs]
    return (np.array(epochs), np.array([v.mean() for v in values]), np.array([v.min() for v in values]),
            np.array([v.max() for v in values]))


# %%
# The report shows figures at most 1200 px wide (13.3 in at save_figure's 90 dpi): fonts of 10 pt
# and more stay at least 12 px tall on screen.
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "legend.fontsize": 10, "xtick.labelsize": 10,
                     "ytick.labelsize": 10})
seed_counts = sorted({sum(r["arch"] == a and r["attention"] == v for r in loaded) for a in archs for v in attentions}
                     - {0})
several = seed_counts[-1] > 1
marker = "o" if max(len(r["epochs"]) for r in loaded) <= 15 else None  # dots while epochs are few
fig, axes = plt.subplots(2, len(archs), figsize=(min(6.5 * len(archs), 13.2), 9), squeeze=False, layout="constrained")
for col, arch in enumerate(archs):
    loss_ax, acc_ax = axes[0, col], axes[1, col]
    faint = min(0.25, 2 / sum(r["arch"] == arch for r in loaded))  # the more runs, the fainter each step line
    for attention in attentions:
        group = [r for r in loaded if r["arch"] == arch and r["attention"] == attention]
        if not group:
            continue
        colour = colours[attention]
        for run in group:  # the training loss every few steps, one faint line per seed
            steps_per_epoch = run["train"]["steps"] / run["train"]["epochs"]
            loss_ax.plot([s["step"] / steps_per_epoch for s in run["steps"]], [s["loss"] for s in run["steps"]],
                         color=colour, alpha=faint, linewidth=0.7)
        for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
            for split, style in (("train", "-"), ("val", "--")):
                epochs, mean, low, high = over_seeds(group, f"{split}_{metric}")
                ax.plot(epochs, mean, style, marker=marker, ms=3.5, linewidth=1.8, color=colour)
                if len(group) > 1:
                    ax.fill_between(epochs, low, high, color=colour, alpha=0.15, linewidth=0)
    dataset = next(r["train"]["dataset"] for r in loaded if r["arch"] == arch)
    loss_ax.set(title=f"{arch} on {dataset}: loss", xlabel="epoch", ylabel="label-smoothed cross entropy")
    acc_ax.set(title=f"{arch} on {dataset}: accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))

fig.legend(handles=[Line2D([], [], color=colours[a], linewidth=3, label=a) for a in attentions],
           loc="outside right upper", title="attention\nvariant")
grey = "0.3"
styles = [Line2D([], [], color=grey, linestyle="-", marker=marker, ms=3.5, label="train, per epoch"),
          Line2D([], [], color=grey, linestyle="--", marker=marker, ms=3.5, label="validation, per epoch"),
          Line2D([], [], color=grey, alpha=0.4, linewidth=0.7, label="train loss every few steps, each seed")]
if several:
    styles.append(Patch(color=grey, alpha=0.2, label="min–max over seeds"))
seeds = f"{seed_counts[0]}" if len(seed_counts) == 1 else f"{seed_counts[0]} to {seed_counts[-1]}"
fig.legend(handles=styles, loc="outside lower center", ncol=len(styles) if len(archs) > 1 else 2,
           title=f"lines: mean over {seeds} seeds per variant" if several else "lines: one seed per variant")
fig.suptitle(f"Learning curves ({profile} profile)", fontsize=14, weight="bold")
figures.save_figure(fig, layout.notebook_figure("learning_curves"))
plt.show()
