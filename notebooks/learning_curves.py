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
# Loss and accuracy of every run, train against validation, NA against the baseline: one
# column per architecture. Faint lines are the training loss logged every few steps; solid
# lines are per-epoch training figures, dashed lines validation.

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
import matplotlib.pyplot as plt

from pipeline import paths, results

layout = paths.Layout(profile, configuration)

loaded = [results.load_run(layout, r) for r in runs]
archs = list(dict.fromkeys(r["arch"] for r in loaded))
attentions = list(dict.fromkeys(r["attention"] for r in loaded))
colours = dict(zip(attentions, plt.get_cmap("tab10").colors, strict=False))  # a colour each, from a palette of 10

fig, axes = plt.subplots(2, len(archs), figsize=(6.5 * len(archs), 8), squeeze=False)
for col, arch in enumerate(archs):
    loss_ax, acc_ax = axes[0, col], axes[1, col]
    for run in (r for r in loaded if r["arch"] == arch):
        colour = colours[run["attention"]]
        label = f"{run['attention']} s{run['seed']}"
        steps_per_epoch = run["train"]["steps"] / run["train"]["epochs"]
        epochs = [e["epoch"] for e in run["epochs"]]
        loss_ax.plot([s["step"] / steps_per_epoch for s in run["steps"]], [s["loss"] for s in run["steps"]],
                     color=colour, alpha=0.25, linewidth=0.8)
        loss_ax.plot(epochs, [e["train_loss"] for e in run["epochs"]], "o-", ms=3, color=colour, label=f"{label} train")
        loss_ax.plot(epochs, [e["val_loss"] for e in run["epochs"]], "o--", ms=3, color=colour, label=f"{label} val")
        acc_ax.plot(epochs, [e["train_acc"] for e in run["epochs"]], "o-", ms=3, color=colour, label=f"{label} train")
        acc_ax.plot(epochs, [e["val_acc"] for e in run["epochs"]], "o--", ms=3, color=colour, label=f"{label} val")
    dataset = next(r["train"]["dataset"] for r in loaded if r["arch"] == arch)
    loss_ax.set(title=f"{arch} on {dataset}: loss", xlabel="epoch", ylabel="label-smoothed cross entropy")
    acc_ax.set(title=f"{arch} on {dataset}: accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
fig.suptitle(f"Learning curves ({profile} profile)")
fig.tight_layout()
results.save_figure(fig, layout.notebook_figure("learning_curves"))
plt.show()
