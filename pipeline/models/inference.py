"""Evaluation through Paddle Inference: oneDNN kernels on the CPU, Paddle's GPU predictor on a GPU.

`compile_model` exports an eval-mode model and returns a predictor function (NCHW float32 batch
-> logits); `measure` runs a whole split through it. A benchmark can time `compile_model(...)`
against the eager model on the same batches.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import paddle
from paddle import inference

from pipeline import PipelineError
from pipeline.core import logs
from pipeline.hardware import paddle_setup
from pipeline.images import transforms
from pipeline.models import tolerances

ENGINE = {"cpu": "paddle-inference-onednn", "gpu": "paddle-inference-gpu"}  # for the metrics JSON


def compile_model(model: paddle.nn.Layer, image_size: int, dev: str = "cpu",
                  threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A predictor for `model` (switched to eval mode): NCHW float32 batch of any size -> logits.

    `threads` sets the process-wide math-library thread count, eager kernels included, so it
    defaults to the count the eager model uses (OMP_NUM_THREADS); another count would change
    eager timings and rounding after this call. The returned function is not thread-safe.
    """
    model.eval()
    with tempfile.TemporaryDirectory() as tmp, logs.native_output_hidden(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns that PIR tensors have no `place`; harmless here
        spec = paddle.static.InputSpec([None, 3, image_size, image_size], "float32", name="images")
        paddle.jit.save(model, f"{tmp}/model", input_spec=[spec])
        # Paddle 3.x writes a PIR program (model.json); older versions write model.pdmodel.
        program = next(p for p in (Path(tmp) / "model.json", Path(tmp) / "model.pdmodel") if p.exists())
        config = inference.Config(str(program), f"{tmp}/model.pdiparams")
        if dev == "gpu":
            config.enable_use_gpu(256, 0)  # initial memory pool (MB), device id
        else:
            config.disable_gpu()
            config.enable_onednn()
            config.set_cpu_math_library_num_threads(threads or paddle_setup.configure_threads())
            # With oneDNN, this pass makes `(g - g.mean(1)) / g.std(1)` (the NA normalisation) come
            # out as (g - mean)**2 / std: std's own `g - mean` is merged with ours, then squared in place.
            config.delete_pass("common_subexpression_elimination_pass")
        config.disable_glog_info()
        config.switch_ir_debug(False)
        predictor = inference.create_predictor(config)  # reads both files; the directory can go
    inputs = predictor.get_input_handle(predictor.get_input_names()[0])
    outputs = predictor.get_output_handle(predictor.get_output_names()[0])

    def predict(batch: np.ndarray) -> np.ndarray:
        inputs.reshape(batch.shape)
        inputs.copy_from_cpu(np.ascontiguousarray(batch, np.float32))
        predictor.run()
        return outputs.copy_to_cpu()  # waits for the GPU

    with logs.native_output_hidden():  # the first run selects kernels, noisily
        predict(np.zeros((1, 3, image_size, image_size), np.float32))
    return predict


class PredictorMismatch(PipelineError):
    """The compiled predictor does not compute what the eager model computes."""


def check_against_eager(model: paddle.nn.Layer, predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray,
                        attention: str, engine: str, number_format: str) -> dict:
    """Run one batch through both; refuse the predictor (one line, both numbers) unless the logits
    agree within the bound of the `number_format` the device computes in (pipeline/models/tolerances.py)
    and so does every top-1 that is not a near tie."""
    with paddle.no_grad():
        eager = model(paddle.to_tensor(batch)).numpy()
    tolerance = tolerances.logit_bound(number_format, attention, eager)
    compiled = predict(batch)
    diff = float(np.abs(compiled - eager).max())
    top2 = np.sort(eager, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] > 2 * tolerance  # a lead a change within the tolerance cannot undo
    flipped = int((compiled.argmax(axis=1) != eager.argmax(axis=1))[decided].sum())
    if diff > tolerance or flipped:
        raise PredictorMismatch(
            f"the {engine} predictor disagrees with eager Paddle on the first {len(batch)} validation images: "
            f"logits differ by up to {diff:.3g} (allowed {tolerance:.3g} in {number_format}) and {flipped} clear "
            "top-1 prediction(s) differ; the predictor's graph passes changed the model, so its accuracy would be "
            "wrong")
    return {"images": len(batch), "max_logit_diff": diff, "tolerance": tolerance, "number_format": number_format}


def smoothed_cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float) -> float:
    """train.smoothed_cross_entropy in numpy (float64): (1 - e) * NLL + e * mean of -log p."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(len(labels)), labels]
    return float(((1 - smoothing) * nll - smoothing * log_probs.mean(axis=1)).mean())


def measure(predict: Callable[[np.ndarray], np.ndarray], images_u8: np.ndarray, labels: np.ndarray, size: int,
             batch_size: int, smoothing: float) -> tuple[float, float, float]:
    """train.validate through a predictor: sample-weighted mean loss, accuracy, and the seconds
    spent in `predict` (copy in, run, copy out; pre-processing excluded)."""
    total_loss, correct, seconds = 0.0, 0, 0.0
    for x, y in transforms.test_batches(images_u8, labels, size, batch_size):
        start = time.perf_counter()
        logits = predict(x)
        seconds += time.perf_counter() - start
        total_loss += smoothed_cross_entropy(logits, y, smoothing) * len(y)
        correct += int((logits.argmax(axis=1) == y).sum())
    return total_loss / len(labels), correct / len(labels), seconds
