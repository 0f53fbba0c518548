"""`python -m pipeline params`: parameter counts and FLOPs of every configuration, beside the post's,
and an estimate of the profile's wall time on one GPU.

Counts as paddle.summary does (BatchNorm running statistics included) at the profile's image
size and number of classes; at the paper profile they must equal the post's exactly.
"""

from __future__ import annotations

from pipeline import data
from pipeline.analysis.claims import CLAIMS
from pipeline.dag import config
from pipeline.models import ATTENTIONS, build_model, count_parameters
from pipeline.models.flops import TRAINING_FACTOR, forward_flops

# The GPU estimate's assumptions: an A100-class GPU sustaining 30% of its 19.5 TFLOP/s float32
# peak on these small convnets, fed by `num_workers` loader processes at 2,500 img/s each
# (`python -m pipeline bench` measures the per-core figure of the data path on your machine).
GPU_TFLOPS, GPU_UTILISATION, LOADER_IMG_S_PER_WORKER = 19.5, 0.30, 2_500


def gpu_minutes(s: dict, flops: int) -> float:
    """Training plus per-epoch validation, limited by compute or by the loader, whichever is slower."""
    _, train, val = data.sizes(s["dataset"])
    train, val = min(train, s["train_subset"] or train), min(val, s["val_subset"] or val)
    compute = s["epochs"] * (train * TRAINING_FACTOR + val) * flops / (GPU_TFLOPS * 1e12 * GPU_UTILISATION)
    loader = s["epochs"] * train / (max(1, s["num_workers"]) * LOADER_IMG_S_PER_WORKER)
    return max(compute, loader) / 60


def table(params: dict) -> list[dict]:
    rows = []
    for experiment in config.experiments(params):
        s = config.run_settings(params, config.run_name(experiment, params["seeds"][0]))
        model = build_model(s["arch"], s["attention"], data.sizes(s["dataset"])[0], s["image_size"])
        flops = forward_flops(model, s["image_size"])
        claim = CLAIMS.get(experiment, {})
        post = config.post_setting(params)[s["arch"]]
        comparable = claim and (s["dataset"], s["image_size"]) == (post["dataset"], post["image_size"])
        rows.append({"experiment": experiment, "dataset": s["dataset"], "image_size": s["image_size"],
                     **count_parameters(model), "claimed": claim.get("params") if comparable else None,
                     "has_claim": bool(claim),
                     "gflops": flops["total"] / 1e9, "attention_share": flops["attention"] / flops["total"],
                     "gpu_minutes": gpu_minutes(s, flops["total"])})
    return rows


def variants(params: dict) -> list[dict]:
    """Every attention variant on each architecture of the matrix, whether the matrix runs it or not:
    total parameters, those the attention adds, and its share of the forward FLOPs."""
    rows = []
    for arch in params["archs"]:
        s = config.arch_settings(params, arch)
        classes = data.sizes(s["dataset"])[0]
        models = {a: build_model(arch, a, classes, s["image_size"]) for a in ATTENTIONS}
        totals = {a: count_parameters(m)["total"] for a, m in models.items()}
        for attention, model in models.items():
            flops = forward_flops(model, s["image_size"])
            rows.append({"arch": arch, "attention": attention, "total": totals[attention],
                         "added": totals[attention] - totals["none"],
                         "attention_share": flops["attention"] / flops["total"]})
    return rows


def main(params: dict) -> None:
    rows = table(params)
    print(f"profile {params['profile']}: parameters as paddle.summary counts them (BatchNorm statistics included)")
    print(f"{'configuration':<18} {'dataset':<9} {'px':>4} {'total':>12} {'trainable':>12} {'post':>12}  match")
    for r in rows:
        claimed = f"{r['claimed']:,}" if r["claimed"] else "-"
        match = ("no claim (a control or peer)" if not r["has_claim"] else "n/a (other data or size)"
                 if not r["claimed"] else "yes" if r["claimed"] == r["total"] else "NO")
        print(f"{r['experiment']:<18} {r['dataset']:<9} {r['image_size']:>4} {r['total']:>12,} "
              f"{r['trainable']:>12,} {claimed:>12}  {match}")
    print(f"\nForward GFLOPs per image (attention included) and an ESTIMATE of GPU minutes per run, assuming "
          f"{GPU_UTILISATION:.0%} of {GPU_TFLOPS} TFLOP/s and {LOADER_IMG_S_PER_WORKER:,} img/s per loader worker:")
    for r in rows:
        print(f"{r['experiment']:<20} {r['gflops']:>8.3f} GFLOPs  attention {r['attention_share']:>6.2%}  "
              f"~{r['gpu_minutes']:.0f} min")
    seeds = len(params["seeds"])
    total = sum(r["gpu_minutes"] for r in rows) * seeds
    print(f"all {len(rows) * seeds} runs: ~{total:.0f} GPU minutes (an estimate, not a measurement)")
    # Attention modules add well under 1% of the FLOPs, so any variant costs about what the baseline does.
    per_variant = sum(r["gpu_minutes"] for r in rows if r["experiment"].endswith("-none")) * seeds
    per_seed = total / seeds
    print(f"each attention added to `attentions`: ~{per_variant:.0f} GPU minutes ({seeds} seeds); "
          f"each seed added to `seeds`: ~{per_seed:.0f}")
    print("\nEvery attention variant (name it in `attentions` to run it): parameters, those the attention adds, "
          "and its share of the forward FLOPs")
    print(f"{'architecture':<13} {'attention':<12} {'total':>12} {'added':>8} {'FLOPs':>7}")
    for r in variants(params):
        print(f"{r['arch']:<13} {r['attention']:<12} {r['total']:>12,} {r['added']:>8,} {r['attention_share']:>7.2%}")
