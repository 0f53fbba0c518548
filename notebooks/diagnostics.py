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
# # What the attention layers compute
# Measured by the evaluate stage on each trained model's best checkpoint and a fixed batch of
# validation images, per attention layer: the spread of the context g across channels before
# normalisation (max − min, averaged over images), the range of the normalised term
# (g − mean) / (std + 1e-5), the learned gamma and beta, and the resulting gate values.
# For na-blog, g is a softmax summed over positions: 1 up to float rounding, so its spread is
# about 1e-7 and the normalised term is rounding noise.

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/dag/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
import matplotlib.pyplot as plt
from IPython.display import HTML

from pipeline.analysis import artifacts, figures, render
from pipeline.dag import paths

layout = paths.Layout(profile, configuration)

measured = {r: artifacts.load_attention(layout, r) for r in runs}
measured = {r: m for r, m in measured.items() if m["layers"]}  # baselines have no attention layer

fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
spread_ax, term_ax, param_ax, gate_ax = axes.flat
# a colour per run from a palette of 10: the lengths differ
for (run, m), colour in zip(measured.items(), plt.get_cmap("tab10").colors, strict=False):
    layers = m["layers"]
    x = range(1, len(layers) + 1)
    pooled = [layer for layer in layers if "g_spread" in layer]
    if pooled:
        spread_ax.semilogy(x, [layer["g_spread"] for layer in pooled], "o-", color=colour, label=run)
        term_ax.fill_between(x, [layer["term_min"] for layer in pooled], [layer["term_max"] for layer in pooled],
                             color=colour, alpha=0.25)
        term_ax.plot(x, [layer["term_max"] for layer in pooled], color=colour, label=run)
    if layers[0]["gamma"] is not None:
        param_ax.plot(x, [layer["gamma"] for layer in layers], "o-", color=colour, label=f"{run} gamma")
    param_ax.plot(x, [layer["beta"] for layer in layers], "s--", color=colour, label=f"{run} beta")
    gate_ax.errorbar(x, [layer["gate_mean"] for layer in layers],
                     yerr=[[max(0, layer["gate_mean"] - layer["gate_min"]) for layer in layers],  # float32
                           [max(0, layer["gate_max"] - layer["gate_mean"]) for layer in layers]],  # rounding
                     fmt="o-", color=colour, capsize=3, label=run)
spread_ax.set(title="spread of g across channels (before normalisation)", xlabel="attention layer",
              ylabel="max − min (log)")
term_ax.set(title="range of the normalised term (g − mean) / (std + 1e-5)", xlabel="attention layer")
param_ax.set(title="learned gamma and beta", xlabel="attention layer")
gate_ax.set(title="gate values sigmoid(gamma · term + beta): mean, min–max", xlabel="attention layer", ylim=(0, 1))
for ax in axes.flat:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
fig.suptitle(f"Attention diagnostics ({profile} profile)")
fig.tight_layout()
figures.save_figure(fig, layout.notebook_figure("diagnostics"))
plt.show()

# %%
HTML(render.table("plain", ["run", "layer", "channels", "g spread", "term range", "gamma", "beta", "gate min–max"], [
    [run, layer["layer"], layer["channels"], f"{layer.get('g_spread', float('nan')):.2e}",
     f"{layer.get('term_min', float('nan')):+.3f} … {layer.get('term_max', float('nan')):+.3f}",
     "–" if layer["gamma"] is None else f"{layer['gamma']:.4f}", f"{layer['beta']:.4f}",
     f"{layer['gate_min']:.3f}–{layer['gate_max']:.3f}"]
    for run, m in measured.items() for layer in m["layers"]]))
