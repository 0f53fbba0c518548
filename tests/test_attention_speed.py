"""Gradients of the pooled NA variants, which were rewritten for CPU speed.

The speed rewrite changed which ops build the backward graph (matmuls for channel sums, no
reduction over the trailing axes of 4-D tensors). The forward is checked against NumPy in
test_models.py; here the backward is checked in float64 against central differences of the
same NumPy references. Timings themselves are not tested: on a shared CPU they are too noisy.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import device

paddle = device.import_paddle()

from pipeline.models import make_attention  # noqa: E402
from tests.test_models import numpy_na_official, numpy_na_paper  # noqa: E402


def numerical_gradients(reference, x, gamma, beta, upstream, eps=1e-6):
    """d sum(reference(x) * upstream) / d (x, gamma, beta), by central differences."""
    def loss(x, gamma, beta):
        return float((reference(x, gamma, beta) * upstream).sum())

    dx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[i] = eps
        dx[i] = (loss(x + step, gamma, beta) - loss(x - step, gamma, beta)) / (2 * eps)
    dgamma = (loss(x, gamma + eps, beta) - loss(x, gamma - eps, beta)) / (2 * eps)
    dbeta = (loss(x, gamma, beta + eps) - loss(x, gamma, beta - eps)) / (2 * eps)
    return dx, dgamma, dbeta


@pytest.mark.parametrize("name, reference", [("na-official", numpy_na_official), ("na-paper", numpy_na_paper)])
@pytest.mark.parametrize("shape", [(2, 6, 5, 4), (1, 3, 7, 7)])
def test_pooled_na_gradients_match_numpy(name, reference, shape):
    rng = np.random.default_rng(sum(shape))
    x, upstream = rng.normal(size=shape), rng.normal(size=shape)
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")
    try:
        layer = make_attention(name)
    finally:
        paddle.set_default_dtype(previous)
    layer.gamma.set_value(paddle.to_tensor([0.7], dtype="float64"))
    layer.beta.set_value(paddle.to_tensor([-0.3], dtype="float64"))
    xt = paddle.to_tensor(x, stop_gradient=False)
    (layer(xt) * paddle.to_tensor(upstream)).sum().backward()

    dx, dgamma, dbeta = numerical_gradients(reference, x, 0.7, -0.3, upstream)
    np.testing.assert_allclose(xt.grad.numpy(), dx, atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(layer.gamma.grad.numpy(), [dgamma], atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(layer.beta.grad.numpy(), [dbeta], atol=1e-7, rtol=1e-6)
