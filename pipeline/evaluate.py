"""Stage `evaluate`: the best checkpoint on the validation set.

Writes val loss/accuracy, parameter counts, inference throughput and the predictions for the
first 18 validation images. The predictor is first checked against the eager model on one
batch (inference.check_against_eager), on whatever device it runs. Val loss/accuracy and
throughput come from one pass over the whole validation set through the Paddle Inference
predictor (pipeline/models/inference.py: oneDNN on the CPU), in batches of `eval_batch_size` after
`throughput_warmup` untimed batches and one untimed batch of the last batch's size: the
predictor's copy of each already-normalised batch in, its forward and the copy of the logits
out. (The post timed its whole DataLoader loop, decoding and transforms included, on a V100.)
The prediction grid and the attention diagnostics run the eager model.
"""

from __future__ import annotations

from pipeline.hardware import job

if __name__ == "__main__":  # before Paddle is imported: the GPU and threads this job holds
    job.prepare(training=False)

import json
import time

import numpy as np
import paddle

from pipeline import PipelineError
from pipeline.core import atomic, stage
from pipeline.dag import config, paths
from pipeline.hardware import device
from pipeline.images import prepared, transforms
from pipeline.models import build_model, count_parameters, inference
from pipeline.models.attention import Gate, NABlog, PooledNA, channel_std

GRID_IMAGES = 18  # as many validation images as the post's prediction grid shows
DIAGNOSTIC_IMAGES = 64  # the fixed batch (first validation images) the attention diagnostics use


def attention_diagnostics(model, batch: np.ndarray) -> list[dict]:
    """Per attention layer, on one fixed batch: the context g before normalisation (its spread
    across channels), the normalised term (g - mean) / (std + 1e-5), gamma, beta, and the gates.
    """
    inputs = {}
    hooks = [layer.register_forward_pre_hook(lambda layer, args, name=name: inputs.__setitem__(name, args[0]))
             for name, layer in model.named_sublayers() if isinstance(layer, (NABlog, PooledNA, Gate))]
    with paddle.no_grad():
        model(paddle.to_tensor(batch))
        layers = dict(model.named_sublayers())
        rows = []
        for name, x in inputs.items():
            layer = layers[name]
            row = {"layer": name, "variant": type(layer).__name__, "channels": int(x.shape[1]),
                   "beta": layer.beta.item(), "gamma": layer.gamma.item() if hasattr(layer, "gamma") else None}
            if isinstance(layer, Gate):
                gate = paddle.nn.functional.sigmoid(layer.beta).item()
                row.update(gate_mean=gate, gate_min=gate, gate_max=gate)
            else:
                g = layer.context(x)
                term = (g - g.mean(axis=1, keepdim=True)) / (channel_std(g) + 1e-5)
                gate = paddle.nn.functional.sigmoid(layer.gamma * term + layer.beta).numpy()
                g, term = g.numpy(), term.numpy()
                row.update(
                    g_mean=float(g.mean()), g_spread=float(np.ptp(g, axis=1).mean()),
                    term_min=float(term.min()), term_max=float(term.max()), term_std=float(term.std()),
                    gate_mean=float(gate.mean()), gate_min=float(gate.min()), gate_max=float(gate.max()),
                )
            rows.append(row)
    for hook in hooks:
        hook.remove()
    return rows


def verified_checkpoint(layout: paths.Layout, run: str, name: str):
    """The checkpoint file, if its sha256 is the one training recorded; refuse it otherwise."""
    path = layout.checkpoints(run) / name
    summary = layout.train_summary(run)
    recorded = json.loads(summary.read_text()).get("checkpoint_sha256", {}).get(name)
    if not path.exists():
        raise PipelineError(f"{path} is missing; rerun the training of {run}")
    if recorded is None or atomic.digest(path) != recorded:
        raise PipelineError(f"{path} does not match the sha256 that training recorded in {summary}; "
                            f"it changed after training: delete {path.parent} and rerun its training")
    return path


def main(params: dict, run: str) -> None:
    started = time.perf_counter()
    s = config.run_settings(params, run)
    dev = device.select(s["device"])
    layout = paths.layout(params)
    data = prepared.load(layout.prepared(s["arch"]))
    val_x, val_y = prepared.subset(data, "test", s["val_subset"])
    model = build_model(s["arch"], s["attention"], len(data["class_names"]), s["image_size"])
    model.set_state_dict(paddle.load(str(verified_checkpoint(layout, run, "best.pdparams"))))
    model.eval()
    predict = inference.compile_model(model, s["image_size"], dev)
    warmup_batch = transforms.test_batch(val_x[: s["eval_batch_size"]], s["image_size"])
    checked = inference.check_against_eager(model, predict, warmup_batch, s["attention"], inference.ENGINE[dev],
                                            device.float32_format(dev))
    for _ in range(s["throughput_warmup"]):  # first-call allocations and kernel selection stay untimed
        predict(warmup_batch)
    predict(warmup_batch[: len(val_y) % s["eval_batch_size"] or None])  # oneDNN prepares kernels per batch shape
    val_loss, val_acc, seconds = inference.measure(predict, val_x, val_y, s["image_size"], s["eval_batch_size"],
                                                    s["label_smoothing"])
    img_per_s = len(val_y) / seconds

    grid = transforms.test_batch(val_x[:GRID_IMAGES], s["image_size"])
    with paddle.no_grad():
        predicted = model(paddle.to_tensor(grid)).argmax(axis=-1).numpy()
    with atomic.atomic_path(layout.predictions(run)) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, inputs=grid, predicted=predicted, true=val_y[:GRID_IMAGES],
                            class_names=data["class_names"])
    diagnostics = attention_diagnostics(model, transforms.test_batch(val_x[:DIAGNOSTIC_IMAGES], s["image_size"]))
    atomic.write_json(layout.attention(run), {"attention": s["attention"], "images": min(len(val_x), DIAGNOSTIC_IMAGES),
                                             "layers": diagnostics})
    atomic.write_json(layout.evaluation(run), {
        "val_acc": val_acc, "val_loss": val_loss, "val_images": len(val_y),
        "throughput_img_s": round(img_per_s, 1), "throughput_batch": s["eval_batch_size"],
        "inference": inference.ENGINE[dev], "predictor_check": checked,
        "device": device.describe(dev), "params": count_parameters(model),
        "seconds": round(time.perf_counter() - started, 2),  # the whole stage, for the report's provenance.json
    })
    print(f"{run}: val acc {val_acc:.4f}, loss {val_loss:.4f}, {img_per_s:.0f} img/s on {device.describe(dev)} "
          f"({inference.ENGINE[dev]})")


if __name__ == "__main__":
    stage.run("evaluate", main, target="run")
