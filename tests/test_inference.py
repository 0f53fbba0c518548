"""Evaluation through Paddle Inference (oneDNN) gives the eager model's predictions, loss and accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipeline.hardware import paddle_setup

paddle = paddle_setup.import_paddle()

from pipeline.images import transforms  # noqa: E402
from pipeline.images.batches import validation_batches  # noqa: E402
from pipeline.models import build_model, inference, tolerances  # noqa: E402
from pipeline.models.attention import NABlog, PooledNA  # noqa: E402
from pipeline.train import validate  # noqa: E402

IMAGES = 300  # two full batches of 128 and a partial one


@pytest.fixture(scope="module")
def digits():
    """Real 8x8 handwritten digits as uint8 RGB, upscaled by the test transform like the demo data."""
    data = load_digits()
    grey = (data.images[:IMAGES] * (255 / 16)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), data.target[:IMAGES]


def trained_looking(arch: str, attention: str, size: int):
    """A seeded eval-mode model whose BatchNorm statistics and NA scalars are not the initial ones.

    NA's gamma starts at 0, which hides its normalisation term; a oneDNN graph pass once got that
    term wrong, so gamma must not be 0 here.
    """
    paddle.seed(0)
    rng = np.random.default_rng(0)
    model = build_model(arch, attention, 10, size)
    for name, p in model.named_parameters():
        if name.endswith("_mean"):
            p.set_value(rng.normal(0, 0.1, p.shape).astype("float32"))
        elif name.endswith("_variance"):
            p.set_value(rng.uniform(0.5, 2, p.shape).astype("float32"))
    for layer in model.sublayers():
        if isinstance(layer, (NABlog, PooledNA)):
            layer.gamma.set_value(np.array([1.5], np.float32))
    return model.eval()


def eager_logits(model, batch: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return model(paddle.to_tensor(batch)).numpy()


@pytest.mark.parametrize("arch, attention, size", [
    ("resnet18", "none", 32), ("alexnet", "na-official", 64), ("alexnet", "na-paper", 64), ("alexnet", "gate", 64),
])
def test_predictor_gives_the_eager_logits(digits, arch, attention, size):
    model = trained_looking(arch, attention, size)
    predict = inference.compile_model(model, size, "cpu")
    for x, _ in transforms.test_batches(*digits, size, 128):  # the last batch is partial
        eager, compiled = eager_logits(model, x), predict(x)
        assert compiled.shape == eager.shape
        assert np.abs(compiled - eager).max() <= 1e-3
        np.testing.assert_array_equal(compiled.argmax(axis=1), eager.argmax(axis=1))


def test_na_blog_exports(digits):
    """Exports and runs; its logits are amplified rounding noise, so oneDNN may move them by more than 1e-3."""
    model = trained_looking("alexnet", "na-blog", 64)
    logits = inference.compile_model(model, 64, "cpu")(transforms.test_batch(digits[0][:5], 64))
    assert logits.shape == (5, 10) and np.isfinite(logits).all()


def test_whole_split_evaluation_matches_eager(digits):
    model = trained_looking("resnet18", "none", 32)
    eager_loss, eager_acc = validate(model, validation_batches(*digits, 32, 128), 0.1)
    loss, acc, seconds = inference.measure(inference.compile_model(model, 32, "cpu"), *digits, 32, 128, 0.1)
    assert acc == eager_acc
    assert loss == pytest.approx(eager_loss, rel=1e-6)
    assert seconds > 0


@pytest.mark.faults
@pytest.mark.parametrize("attention", ["none", "na-blog"])
def test_the_evaluate_stages_self_check_passes_the_predictor_and_refuses_a_wrong_one(digits, attention):
    model = trained_looking("alexnet", attention, 64)
    predict = inference.compile_model(model, 64, "cpu")
    batch = transforms.test_batch(digits[0][:32], 64)
    checked = inference.check_against_eager(model, predict, batch, attention, "onednn", "fp32")
    eager = model(paddle.to_tensor(batch)).numpy()
    assert checked["max_logit_diff"] <= checked["tolerance"] == tolerances.logit_bound("fp32", attention, eager)
    assert checked["number_format"] == "fp32"

    def broken(x):  # as a graph pass that drops part of the model would: one class's logit moves
        logits = predict(x)
        logits[:, 3] += 1.0
        return logits

    with pytest.raises(inference.PredictorMismatch) as err:
        inference.check_against_eager(model, broken, batch, attention, "onednn", "fp32")
    message = str(err.value)
    assert "logits differ by up to 1" in message and f"allowed {checked['tolerance']:.3g} in fp32" in message
    assert "\n" not in message
