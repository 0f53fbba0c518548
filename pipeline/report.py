"""Stage `report`: one self-contained reports/index.html (inline CSS, images embedded as data URIs).

Every number comes from an artifact: the comparison table from reports/comparison.json (the
comparison notebook's output), figures from the notebooks, run details from runs/*/*.json.
Only the post's claimed figures come from pipeline/claims.py, and they are labelled as the claim.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import platform
import subprocess
from importlib import metadata

from pipeline import atomic, config, paths, results

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.claim { color: #555; font-style: italic; }
.banner { padding: 0.8em 1em; border-radius: 6px; margin: 1em 0; font-weight: 600; }
.demo { background: #fff3cd; border: 2px solid #e0a800; }
.paper { background: #d1e7dd; border: 2px solid #198754; }
img { max-width: 100%; border: 1px solid #ddd; }
.meta td { text-align: left; }
"""


def _version(*packages: str) -> str:
    for name in packages:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def versions() -> dict:
    return {
        "Python": platform.python_version(),
        "PaddlePaddle": _version("paddlepaddle-gpu", "paddlepaddle"),
        **{name: _version(name) for name in ("numpy", "snakemake", "dvc", "papermill", "jupytext", "matplotlib")},
    }


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def image_tag(name: str, alt: str) -> str:
    data = base64.b64encode(paths.notebook_figure(name).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def image_sizes(settings: dict) -> str:
    size = settings["image_size"]
    return " / ".join(f"{v} px ({k})" for k, v in size.items()) if isinstance(size, dict) else f"{size} px"


def banner(profile: str, settings: dict) -> str:
    if profile == "paper":
        return ('<div class="banner paper">Paper profile: the post\'s recipe on CIFAR-10/100 '
                f'({settings["epochs"]} epochs, {image_sizes(settings)}).</div>')
    return (f'<div class="banner demo">{profile.upper()} PROFILE: NOT THE PAPER\'S EXPERIMENT. '
            f'These runs train on {", ".join(sorted(set(settings["datasets"].values())))} for '
            f'{settings["epochs"]} epoch(s) at {image_sizes(settings)} to show that the pipeline works; '
            "their numbers are not comparable with the post's claim. For the reproduction run "
            "<code>snakemake --cores 4 all --config profile=paper</code> on a GPU machine.</div>")


def markdown_html(text: str) -> str:
    """The benchmark's Markdown (paragraphs and pipe tables, `code`) as HTML."""
    out, rows = [], []

    def cells(line: str) -> list[str]:
        return [html.escape(c.strip()).replace("`", "") for c in line.strip().strip("|").split("|")]
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):  # skip the header separator
                rows.append(cells(line))
            continue
        if rows:
            head, *body = rows
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            rows = []
        if line.strip():
            out.append(f"<p>{html.escape(line).replace('`', '')}</p>")
    return "\n".join(out)


def benchmark_appendix() -> str:
    """The last `python -m pipeline bench` results, if it was run here."""
    if not paths.BENCH_TABLE.exists():
        return ""
    return ("<h2>Appendix: benchmark</h2>\n<p>From <code>python -m pipeline bench</code> "
            f"({html.escape(str(paths.BENCH_JSON))}); not a pipeline stage.</p>\n"
            + markdown_html(paths.BENCH_TABLE.read_text()))


def main(params: dict) -> None:
    settings = config.profile_settings(params)
    table = json.loads(paths.COMPARISON_TABLE.read_text())
    loaded = [results.load_run(r) for r in config.runs(params)]
    meta = {
        "profile": params["profile"],
        "datasets": ", ".join(f"{a}: {d}" for a, d in settings["datasets"].items()),
        "device": "; ".join(sorted({r["train"]["device"] for r in loaded})),
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git commit": git_commit(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
    }
    meta_rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    run_rows = "".join(
        f"<tr><td>{r['run']}</td><td>{r['train']['dataset']}</td><td>{r['train']['image_size']}</td>"
        f"<td>{r['train']['train_images']:,}</td><td>{r['train']['val_images']:,}</td><td>{r['train']['epochs']}</td>"
        f"<td>{r['train']['best_epoch']}</td><td>{r['eval']['val_acc']:.4f}</td>"
        f"<td>{r['eval']['throughput_img_s']:,.0f}</td><td>{r['train']['seconds']:,.0f}</td></tr>"
        for r in loaded
    )
    links = " · ".join(
        f'<a href="notebooks/{n}.html">{n}</a> (<a href="notebooks/{n}.ipynb">ipynb</a>)' for n in paths.NOTEBOOKS
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>NA reproduction report ({params['profile']})</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<h1>Does NA lift AlexNet and ResNet18 on CIFAR?</h1>
<p>A reproduction of the blog post that re-implements the NA ("normalization attention") module in
PaddlePaddle and claims AlexNet on CIFAR-10 goes from 79.7% to 84.6% and ResNet18 on CIFAR-100 from
67.3% to 68.4%.</p>
{banner(params['profile'], settings)}
<table class="meta">{meta_rows}</table>

<h2>Findings</h2>
<ul class="findings">{''.join(f"<li>{html.escape(f)}</li>" for f in table['findings'])}</ul>

<h2>Claimed against ours</h2>
<p>Claimed figures are {html.escape(table['claim_source'])}; they are in italics. Ours: final-epoch train
accuracy, validation accuracy of the best checkpoint, parameters as paddle.summary counts them, and
inference throughput on {html.escape(', '.join(table['eval_device']))} through
{html.escape(', '.join(table['eval_engine']))} (pre-processed batches in, logits out, after warm-up; the post's is {html.escape(table['claim_throughput_setup'])}, so only the ratio between
configurations is comparable). Mean ± standard deviation over seeds.</p>
{results.comparison_html(table['rows'])}

<h2>Does NA help? Gains over the baseline and over the gate control</h2>
<p>Rule: {html.escape(table['rule'])}. Test: {html.escape(table['test'])}. The gate control
(y = x · sigmoid(beta), one learned scalar) is what na-blog reduces to.</p>
{results.gains_html(table['gains'] + table['gate_controls'])}

<h2>Learning curves</h2>
{image_tag('learning_curves', 'Loss and accuracy curves, train and validation, per architecture')}

<h2>Predictions on the first validation images</h2>
{image_tag('predictions', 'Grid of validation images with predicted and true labels')}

<h2>What the attention layers compute</h2>
<p>Per attention layer of each trained model, on a fixed batch of validation images: the spread of
the context g across channels before normalisation, the range of the normalised term, the learned
gamma and beta, and the gate values.</p>
{image_tag('diagnostics', 'Attention diagnostics per layer: g spread, normalised term, gamma and beta, gates')}

<h2>Runs</h2>
<table><tr><th>run</th><th>data</th><th>px</th><th>train images</th><th>val images</th><th>epochs</th>
<th>best epoch</th><th>val acc</th><th>img/s</th><th>train seconds</th></tr>{run_rows}</table>

<h2>How this maps to the post</h2>
<ul>
<li>The comparison table is the post's results table (train acc, val acc, parameters) plus its
throughput line ("Throughout: 1629").</li>
<li>The learning curves are the post's loss and accuracy curves; the grid is its 18 validation images
with predicted (p) and true (t) labels.</li>
<li>The post's training chain lists PaddleX <code>MixupImage()</code>: on a plain image it does nothing
(it needs a detection sample with a <code>mixup</code> key) and the loss takes hard labels, so it is
treated as a no-op here.</li>
<li>The post shows only ResNet18's results, not its notebook: its recipe and the 128 px data pipeline
are assumed to be AlexNet's. Its parameter count identifies the model (Paddle's ResNet18, one NA after
bn2 of each BasicBlock) exactly.</li>
<li>"na-blog" is the post's NA code op for op. Its context g sums a softmax, so it is 1 for every
channel up to rounding; "na-official" (the authors' code: softmax-weighted pooling of x by the
channel-mean map) and "na-paper" (the paper's printed L1 formula read the same way) are the
module as intended, and "gate" is the one-scalar control.</li>
</ul>

<h2>Notebooks</h2>
<p>Executed with papermill: {links}</p>
{benchmark_appendix()}
</body></html>
"""
    atomic.write_text(paths.REPORT, page)
    print(f"report: {paths.REPORT}")
