"""The pooled NA variants' CPU paths: their gradients, the fused C++ kernels, and building them.

The composed version (Paddle ops, float64 here) was written to avoid Paddle's slowest CPU
kernels, which changed the ops that build its backward graph (matmuls for channel sums, no
reduction over the trailing axes of 4-D tensors). The forward is checked against NumPy in
test_models.py; here the backward is checked against central differences of the same NumPy
references, the fused C++ version (float32 on the CPU) against the composed one, and the
kernels' one-time build. Their speed is `python -m pipeline bench`'s to measure, not a test's.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.hardware import paddle_setup

paddle = paddle_setup.import_paddle()

from pipeline.models import fused  # noqa: E402
from pipeline.models.attention import make_attention  # noqa: E402
from tests.helpers.numpy_attention import numpy_na_official, numpy_na_paper  # noqa: E402


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
        layer = make_attention(name, shape[1])
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


@pytest.mark.parametrize("name", ["na-official", "na-paper"])
@pytest.mark.parametrize("shape, scale", [((4, 48, 32, 32), 1.0), ((3, 5, 7, 9), 1.0), ((2, 48, 16, 16), 30.0)])
def test_fused_cpu_version_matches_the_composed_ops(name, shape, scale):
    """float32 on the CPU runs the fused C++ version; it agrees with the composed Paddle ops
    (checked against NumPy above) up to float rounding, forward and backward. scale 30 makes the
    softmax weights peaked and most gradients through them denormal (the kernels flush those)."""
    assert fused.kernels() is not None, "the fused NA kernels did not build; see the message above"
    rng = np.random.default_rng(len(shape) + int(scale))
    layer = make_attention(name, shape[1])
    layer.gamma.set_value(paddle.to_tensor([0.7]))
    layer.beta.set_value(paddle.to_tensor([-0.3]))
    x = paddle.to_tensor((rng.normal(size=shape) * scale).astype("float32"), stop_gradient=False)
    upstream = paddle.to_tensor(rng.normal(size=shape).astype("float32"))
    assert fused.applies(x)

    results = {}
    for version, forward in (("fused", layer), ("composed", layer.composed)):
        y = forward(x)
        (y * upstream).sum().backward()
        results[version] = [t.numpy().copy() for t in (y, x.grad, layer.gamma.grad, layer.beta.grad)]
        x.clear_gradient()
        layer.clear_gradients()
    for label, got, want in zip(("y", "grad x", "grad gamma", "grad beta"), *results.values(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5 * np.abs(want).max(), err_msg=label)


@pytest.mark.slow
def test_kernels_build_once_for_parallel_jobs_or_fall_back_to_the_composed_ops(tmp_path):
    """Two processes that start at once on an empty kernel cache (as Snakemake's parallel trainings
    do) both get the kernels; where they cannot build (here, a broken source), training goes on
    with the composed ops after a one-line note."""
    code = ("import sys, numpy as np; from pipeline.hardware import paddle_setup; "
            "paddle = paddle_setup.import_paddle(); "
            "from pipeline.models import fused; from pipeline.models.attention import make_attention; "
            "fused.SOURCE = fused.Path(sys.argv[1]) if len(sys.argv) > 1 else fused.SOURCE; "
            "x = paddle.ones([2, 3, 4, 4]) * paddle.arange(16, dtype='float32').reshape([1, 1, 4, 4]); "
            "y = make_attention('na-paper', 3)(x); "
            "print('fused' if fused.kernels() else 'composed', float(y.sum()))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    jobs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [job.communicate() for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert [out.split()[0] for out, _ in outputs] == ["fused", "fused"], outputs
    assert len(list((tmp_path / "cache" / "na-repro" / "kernels").iterdir())) == 1

    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    done = subprocess.run([sys.executable, "-c", code, str(broken)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "composed"
    assert np.isclose(float(done.stdout.split()[1]), float(outputs[0][0].split()[1]), rtol=1e-5)
    notes = [line for line in done.stderr.splitlines() if line.startswith("NA: the fused CPU kernels did not build")]
    assert len(notes) == 1, done.stderr
