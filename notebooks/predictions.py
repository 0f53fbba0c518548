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
# # Prediction grids
# The first 18 validation images as each run's best checkpoint sees them (resized and
# normalised, then de-normalised for display), with the predicted (p) and true (t) label.
# Green titles are correct, red ones wrong.

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
import matplotlib.pyplot as plt
import numpy as np

from pipeline import images, paths, results

layout = paths.Layout(profile, configuration)

grids = {}
for run in runs:
    with np.load(layout.predictions(run)) as npz:
        grids[run] = {k: npz[k] for k in npz.files}
columns = max(len(g["true"]) for g in grids.values())

fig, axes = plt.subplots(len(runs), columns, figsize=(1.3 * columns, 1.8 * len(runs)), squeeze=False)
for row, (run, grid) in enumerate(grids.items()):
    names = grid["class_names"]
    for col, ax in enumerate(axes[row]):
        ax.axis("off")
        if col >= len(grid["true"]):
            continue
        ax.imshow(images.denormalise(grid["inputs"][col : col + 1])[0])
        predicted, true = grid["predicted"][col], grid["true"][col]
        ax.set_title(f"p: {names[predicted]}\nt: {names[true]}", fontsize=9,
                     color="tab:green" if predicted == true else "tab:red")
    accuracy = float(np.mean(grid["predicted"] == grid["true"]))
    axes[row, 0].text(-0.15, 0.5, f"{run}\n{accuracy:.0%} of {len(grid['true'])}", transform=axes[row, 0].transAxes,
                      ha="right", va="center", fontsize=10)
fig.suptitle(f"First {columns} validation images ({profile} profile)", y=1.0)
fig.tight_layout()
results.save_figure(fig, layout.notebook_figure("predictions"))
plt.show()
