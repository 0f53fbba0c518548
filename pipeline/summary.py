"""`python -m pipeline params`: parameter counts of every configuration, beside the post's.

Counts as paddle.summary does (BatchNorm running statistics included) at the profile's image
size and number of classes; at the paper profile they must equal the post's exactly.
"""

from __future__ import annotations

from pipeline import config
from pipeline.claims import CLAIMS
from pipeline.models import build_model, count_parameters

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}


def table(params: dict) -> list[dict]:
    rows = []
    for experiment in config.experiments(params):
        s = config.run_settings(params, config.run_name(experiment, params["seeds"][0]))
        model = build_model(s["arch"], s["attention"], NUM_CLASSES[s["dataset"]], s["image_size"])
        claim = CLAIMS.get(experiment, {})
        comparable = claim.get("dataset") == s["dataset"] and s["image_size"] == 128
        rows.append({"experiment": experiment, "dataset": s["dataset"], "image_size": s["image_size"],
                     **count_parameters(model), "claimed": claim.get("params") if comparable else None})
    return rows


def main(params: dict) -> None:
    print(f"profile {params['profile']}: parameters as paddle.summary counts them (BatchNorm statistics included)")
    print(f"{'configuration':<18} {'dataset':<9} {'px':>4} {'total':>12} {'trainable':>12} {'post':>12}  match")
    for r in table(params):
        claimed = f"{r['claimed']:,}" if r["claimed"] else "-"
        match = "n/a (other data or size)" if not r["claimed"] else "yes" if r["claimed"] == r["total"] else "NO"
        print(f"{r['experiment']:<18} {r['dataset']:<9} {r['image_size']:>4} {r['total']:>12,} "
              f"{r['trainable']:>12,} {claimed:>12}  {match}")
