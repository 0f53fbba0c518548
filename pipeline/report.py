"""Stage `report`: one self-contained reports/index.html (inline CSS, images embedded as data URIs).

Every number comes from an artifact: the comparison table from reports/comparison.json (the
comparison notebook's output), figures from the notebooks, run details from runs/*/*.json.
Only the post's claimed figures come from pipeline/claims.py, and they are labelled as the claim.
The provenance manifest (pipeline/provenance.py) goes to reports/provenance.json and the last appendix.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import time

from pipeline import atomic, config, paths, provenance, results

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
.meta td, .meta th, .text { text-align: left; }
"""


def git_html(git: dict, short: bool = True) -> str:
    if git["commit"] is None:
        return "unknown (not a git checkout)"
    commit = git["commit"][:10] if short else f"<code>{git['commit']}</code>"
    return f"{commit} ({'with uncommitted changes to tracked files' if git['dirty'] else 'clean'})"


def versions_text(versions: dict) -> str:
    paddle = versions["paddle"] or {}
    build = (f"CUDA {paddle['cuda']}, cuDNN {paddle['cudnn']}" if paddle.get("cuda") else "CPU build")
    named = {"Python": versions["python"],
             "PaddlePaddle": f"{paddle['version']} ({build}, commit {paddle['commit'][:10]})" if paddle else None,
             **{k: v for k, v in versions.items() if k not in ("python", "paddle")}}
    return ", ".join(f"{k} {v or 'not installed'}" for k, v in named.items())


def precision(summary: dict) -> str:
    """What a run trained in, and what it asked for when that differs (amp on a CPU, or bf16 that
    Paddle turned off on a GPU without it)."""
    asked, got = summary["amp"], summary["precision"]
    return got if asked == got else f"{got} (amp={asked} asked)"


def image_tag(path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
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
    for line in [*text.splitlines(), ""]:
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


def _rows(pairs) -> str:
    return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in pairs)


def provenance_appendix(manifest: dict, path) -> str:
    """The manifest of reports/provenance.json, readable: code, software, devices, parameters,
    wall times, and every artifact with its size and sha256."""
    params = manifest["params"]
    settings = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in params["settings"].items()}
    times = ""
    for stage, record in manifest["wall_time"].items():  # one row per target; stage and note span them
        span = len(record["seconds"])
        for i, (target, seconds) in enumerate(record["seconds"].items()):
            shown = "not recorded" if seconds is None else f"{seconds:,.2f}"
            times += ("<tr>" + (f'<td rowspan="{span}">{stage}</td>' if i == 0 else "")
                      + f'<td class="text">{html.escape(target)}</td><td>{shown}</td>'
                      + (f'<td rowspan="{span}" class="text">{html.escape(record["measures"])}</td>' if i == 0 else "")
                      + "</tr>")
    files = "".join(
        f'<tr><td>{html.escape(a["path"])}</td><td>{a["size"]:,}</td>'
        f'<td><code title="{a["sha256"]}">{a["sha256"][:16]}</code></td></tr>'
        for a in manifest["artifacts"]
    )
    return f"""<h2>Appendix: provenance</h2>
<p>Also as JSON in <code>{html.escape(str(path))}</code>, with full sha256 digests, made
{html.escape(manifest["generated"])}. Git commit: {git_html(manifest["git"], short=False)}
(dvc.lock, which DVC rewrites while it runs, does not count as a change).</p>
<table class="meta">{_rows([("versions", versions_text(manifest["versions"])),
                            ("train device", "; ".join(manifest["devices"]["train"])),
                            ("evaluate device", "; ".join(manifest["devices"]["evaluate"]))])}</table>
<h3>Settings that can change the results, overrides applied</h3>
<table class="meta">{_rows([("profile", params["profile"]), ("configuration", params["configuration"]),
                            ("overrides", " ".join(params["overrides"]) or "none"),
                            ("archs", json.dumps(params["archs"])),
                            ("attentions", json.dumps(params["attentions"])), ("seeds", json.dumps(params["seeds"])),
                            *sorted(settings.items())])}</table>
<h3>Wall time per stage (seconds)</h3>
<table><tr><th>stage</th><th class="text">target</th><th>seconds</th><th class="text">what the time covers</th></tr>
{times}</table>
<h3>Artifacts ({len(manifest["artifacts"])} files)</h3>
<table><tr><th>path</th><th>bytes</th><th>sha256 (first 16 hex digits)</th></tr>{files}</table>"""


def main(params: dict) -> None:
    started = time.perf_counter()
    settings = config.profile_settings(params)
    layout = paths.layout(params)
    table = json.loads(layout.comparison_table.read_text())
    loaded = [results.load_run(layout, r) for r in config.runs(params)]
    manifest = provenance.build(params, layout, loaded, started)
    atomic.write_json(layout.provenance, manifest)
    overrides = config.cli_overrides(params)
    meta = {
        "profile": params["profile"],
        "configuration": layout.configuration + (f" (overrides: {' '.join(overrides)})" if overrides
                                                 else " (params.yaml as it is)"),
        "datasets": ", ".join(f"{a}: {d}" for a, d in settings["datasets"].items()),
        "device": "; ".join(manifest["devices"]["train"]),
        "generated": datetime.datetime.fromisoformat(manifest["generated"]).strftime("%Y-%m-%d %H:%M UTC"),
        "git commit": git_html(manifest["git"]),
        "versions": versions_text(manifest["versions"]),
    }
    meta_rows = _rows(meta.items())
    run_rows = "".join(
        f"<tr><td>{r['run']}</td><td>{r['train']['dataset']}</td><td>{r['train']['image_size']}</td>"
        f"<td>{r['train']['train_images']:,}</td><td>{r['train']['val_images']:,}</td><td>{r['train']['epochs']}</td>"
        f"<td>{r['train']['best_epoch']}</td><td>{precision(r['train'])}</td><td>{r['eval']['val_acc']:.4f}</td>"
        f"<td>{r['eval']['throughput_img_s']:,.0f}</td><td>{r['train']['seconds']:,.0f}</td></tr>"
        for r in loaded
    )
    links = " · ".join(
        f'<a href="notebooks/{n}.html">{n}</a> (<a href="notebooks/{n}.ipynb">ipynb</a>)' for n in paths.NOTEBOOKS
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>NA reproduction report ({layout.configuration})</title>
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
{html.escape(', '.join(table['eval_engine']))} (pre-processed batches in, logits out, after warm-up; the post's is \
{html.escape(table['claim_throughput_setup'])}, so only the ratio between
configurations is comparable). Mean ± standard deviation over seeds.</p>
{results.comparison_html(table['rows'])}

<h2>Does NA help? Gains over the baseline and over the gate and half controls</h2>
<p>Rule: {html.escape(table['rule'])}. Test: {html.escape(table['test'])}. The gate control
(y = x · sigmoid(beta), one learned scalar) is what na-blog reduces to; half (y = 0.5 x, fixed) is
where both start.</p>
{results.gains_html(table['gains'] + table['gate_controls'] + table['half_controls'])}

<h2>Every variant: which module, at what price</h2>
<p>Per variant that ran: validation accuracy over seeds, its gain over the baseline with Welch's
95% interval, the parameters it adds, and its training time over the baseline's (the runs' own
wall time, same machine and recipe). The verdict is the claim's where the post made one, else the
direction of the interval.</p>
{results.variants_html(table['variants'])}

<h2>Where each variant starts</h2>
<p>The first step's loss and the standard deviation of its logits, before any update, mean over
seeds. Rule: {html.escape(table['scale_rule'])}.</p>
{image_tag(layout.notebook_figure('comparison'), "First loss and logits' scale at step 0 per attention variant")}

<h2>Learning curves</h2>
{image_tag(layout.notebook_figure('learning_curves'),
           'Loss and accuracy curves, train and validation, per architecture')}

<h2>Predictions on the first validation images</h2>
{image_tag(layout.notebook_figure('predictions'), 'Grid of validation images with predicted and true labels')}

<h2>What the attention layers compute</h2>
<p>Per attention layer of each trained model, on a fixed batch of validation images: the spread of
the context g across channels before normalisation, the range of the normalised term, the learned
gamma and beta, and the gate values.</p>
{image_tag(layout.notebook_figure('diagnostics'),
           'Attention diagnostics per layer: g spread, normalised term, gamma and beta, gates')}

<h2>Runs</h2>
<table><tr><th>run</th><th>data</th><th>px</th><th>train images</th><th>val images</th><th>epochs</th>
<th>best epoch</th><th>trained in</th><th>val acc</th><th>img/s</th><th>train seconds</th></tr>{run_rows}</table>

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
{provenance_appendix(manifest, layout.provenance)}
</body></html>
"""
    atomic.write_text(layout.report, page)
    print(f"report: {layout.report} and {layout.provenance}")
