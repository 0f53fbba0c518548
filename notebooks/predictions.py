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
# Every run of one architecture sees the same first validation images (18 of them), so each image
# is shown once per architecture, as the model sees it (resized and normalised, then de-normalised
# for display), in rows of 6 (9 when the class names are short). Under each image: its true class
# in bold, then one line per configuration (attention variant, named on the left with its accuracy
# on these images, mean over its seeds). Each line gives the configuration's most common prediction
# over its seeds (a tie goes to the post's seed, 42, else the lowest seed), ✓ if that
# prediction is right and ✗ if wrong, and with several seeds how many of them were right, as
# (seeds right/seeds), e.g. (2/3). Colour repeats the count: green when every seed is right,
# orange when some are, red when none is. Class names too long for a cell are shortened with "…".

# %% tags=["parameters"]
profile = "demo"
configuration = "demo"  # the folder of this configuration's results (pipeline/dag/paths.py)
runs = ["alexnet-none-s42", "alexnet-na-blog-s42", "resnet18-none-s42", "resnet18-na-blog-s42"]

# %%
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from pipeline.analysis import claims, figures
from pipeline.dag import config, paths
from pipeline.images import transforms

layout = paths.Layout(profile, configuration)

# Each run's predictions, grouped by architecture, then by attention variant (its seeds, the post's first).
grids = {}
for run in runs:
    experiment, seed = config.parse_run(run)
    arch, attention = config.split_experiment(experiment)
    with np.load(layout.predictions(run)) as npz:
        grid = {k: npz[k] for k in npz.files}
    grids.setdefault(arch, {}).setdefault(attention, []).append((seed, grid))
for variants in grids.values():
    for seeds in variants.values():
        seeds.sort(key=lambda s: (s[0] != claims.SEED, s[0]))

# %%
# Sizes in inches and points. The figure is 1200 px wide at save_figure's 90 dpi, the most the
# report shows, so a 10 pt font is 12.5 px on screen.
DPI = 90
WIDTH = 1190 / DPI  # a margin for bbox_inches="tight"
FONT, TITLE_FONT = 10, 13
LINE = FONT * 1.45 / 72  # one text line, inches
GREEN, ORANGE, RED = "#1b7a1b", "#c05800", "#c0001a"
_measure = TextToPath()


def text_width(text: str, size: float = FONT, weight: str = "normal") -> float:
    """Width of `text` in inches, as matplotlib will draw it."""
    width, _, _ = _measure.get_text_width_height_descent(text, FontProperties(size=size, weight=weight), ismath=False)
    return width / 72


def fit(text: str, width: float, size: float = FONT, weight: str = "normal") -> str:
    """`text`, shortened with an ellipsis until it fits in `width` inches."""
    if text_width(text, size, weight) <= width:
        return text
    while len(text) > 1 and text_width(text + "…", size, weight) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def wrap(text: str, width: float, size: float = FONT) -> list[str]:
    """`text` in lines of at most `width` inches, broken between words."""
    lines = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", size) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def display_name(name) -> str:
    return str(name).replace("_", " ")


def summarise(seeds: list, i: int) -> dict:
    """Configuration's prediction of image i over its seeds: the most common one (ties: the first seed)."""
    true = int(seeds[0][1]["true"][i])
    predictions = [int(g["predicted"][i]) for _, g in seeds]
    shown = Counter(predictions).most_common(1)[0][0]
    right = sum(p == true for p in predictions)
    colour = GREEN if right == len(predictions) else RED if right == 0 else ORANGE
    return {"shown": shown, "ok": shown == true, "right": right, "n": len(predictions), "colour": colour}


def cell_text(summary: dict, names, width: float) -> str:
    mark = "✓" if summary["ok"] else "✗"
    count = f" ({summary['right']}/{summary['n']})" if summary["n"] > 1 else ""
    room = width - text_width(f"{mark}  {count}")
    return f"{mark} {fit(display_name(names[summary['shown']]), room)}{count}"


# %%
# Per architecture: the images, checked to be the same for every run, and the layout of its block.
PERCENT = text_width("100%") + 0.1  # the accuracy column, left of the images
PAD = 0.2  # between the texts of neighbouring images


def section(arch: str, variants: dict) -> dict:
    first = next(iter(variants.values()))[0][1]
    for attention, seeds in variants.items():
        for seed, g in seeds:
            if not np.array_equal(g["true"], first["true"]):
                raise ValueError(f"{arch}-{attention}-s{seed} saw other validation images than its architecture's "
                                 "first run; the grid shows each image once per architecture")
    names = first["class_names"]
    left = max(text_width(t) for t in [*variants, "true class"]) + PERCENT + 0.2
    count = " (10/10)" if max(len(s) for s in variants.values()) > 1 else ""
    widest = max(max(text_width(display_name(n), weight="bold"), text_width(f"✗ {display_name(n)}{count}"))
                 for n in names)
    columns = 9 if widest + PAD <= (WIDTH - left) / 9 else 6
    cell = (WIDTH - left) / columns
    low, high = min(len(s) for s in variants.values()), max(len(s) for s in variants.values())
    seeds = "1 seed" if high == 1 else f"{high} seeds" if low == high else f"{low} to {high} seeds"
    return {
        "arch": arch, "names": names, "true": first["true"], "images": transforms.denormalise(first["inputs"]),
        "accuracy": {a: float(np.mean([g["predicted"] == g["true"] for _, g in s])) for a, s in variants.items()},
        "summaries": [{a: summarise(s, i) for a, s in variants.items()} for i in range(len(first["true"]))],
        "left": left, "columns": columns, "cell": cell, "image": min(0.8 * cell, 1.35), "seeds": seeds,
        "rows": -(-len(first["true"]) // columns), "lines": 1 + len(variants),
    }


sections = [section(arch, variants) for arch, variants in grids.items()]

# %%
HEADER = 2.3 * LINE  # an architecture's title and the gap above it
GAP = 0.6 * LINE  # below each row of images and its text
several = any(len(seeds) > 1 for variants in grids.values() for seeds in variants.values())
key = ("Under each image: the true class (bold), then each configuration's most common prediction over its seeds "
       f"(ties: seed {claims.SEED}), ✓ right or ✗ wrong, and (seeds right/seeds). Green: every seed right, "
       "orange: some, red: none. Left: each configuration's accuracy on these images, mean over its seeds."
       if several else
       "Under each image: the true class (bold), then each configuration's prediction, ✓ right (green) or ✗ wrong "
       "(red). Left: each configuration's accuracy on these images.")
key_lines = wrap(key, WIDTH - 0.6)
top = (2 + len(key_lines)) * LINE


def row_height(s: dict) -> float:
    return s["image"] + 0.1 + s["lines"] * LINE + GAP


height = top + sum(HEADER + s["rows"] * row_height(s) for s in sections)
fig = plt.figure(figsize=(WIDTH, height), dpi=DPI)


def at(y: float) -> float:
    """Inches from the top -> figure fraction from the bottom."""
    return 1 - y / height


def write(x: float, y: float, text: str, **style) -> None:
    """Text with its top at y inches from the top, x inches from the left."""
    fig.text(x / WIDTH, at(y), text, va="top", **{"fontsize": FONT, **style})


write(WIDTH / 2, 0.2 * LINE, f"Predictions on the first validation images ({profile} profile)", ha="center",
      fontsize=TITLE_FONT + 1, weight="bold")
write(WIDTH / 2, 1.6 * LINE, "\n".join(key_lines), ha="center", linespacing=1.35)

y = top
for s in sections:
    n, left, cell, image = len(s["true"]), s["left"], s["cell"], s["image"]
    write(0.05, y + 0.7 * LINE, f"{s['arch']}: the first {n} validation images, {len(s['names'])} classes, "
          f"{s['seeds']} per configuration", fontsize=TITLE_FONT, weight="bold")
    y += HEADER
    for start in range(0, n, s["columns"]):
        text_top = y + image + 0.1
        write(left - 0.1, text_top, "true class", ha="right", style="italic")
        for k, (attention, accuracy) in enumerate(s["accuracy"].items(), start=1):
            write(left - 0.1 - PERCENT, text_top + k * LINE, attention, ha="right")
            write(left - 0.1, text_top + k * LINE, f"{accuracy:.0%}", ha="right")
        for col, i in enumerate(range(start, min(start + s["columns"], n))):
            centre = left + (col + 0.5) * cell
            ax = fig.add_axes([(centre - image / 2) / WIDTH, at(y + image), image / WIDTH, image / height])
            ax.imshow(s["images"][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            write(centre, text_top, fit(display_name(s["names"][s["true"][i]]), cell - PAD, weight="bold"),
                  ha="center", weight="bold")
            for k, summary in enumerate(s["summaries"][i].values(), start=1):
                write(centre, text_top + k * LINE, cell_text(summary, s["names"], cell - PAD), ha="center",
                      color=summary["colour"])
        y += row_height(s)

figures.save_figure(fig, layout.notebook_figure("predictions"))
plt.show()
