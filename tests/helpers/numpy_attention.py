"""Independent NumPy versions of the attention variants (docs/the-post.md#the-attention-variants), in
float64: what tests/test_models.py holds the Paddle modules to, and test_fused_kernels.py their gradients."""

from __future__ import annotations

import numpy as np


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax(s, axis):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _normalised_gate(g, gamma, beta):
    g = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-5)
    return sigmoid(gamma * g + beta)


def numpy_na_official(x, gamma, beta):
    b, c, h, w = x.shape
    m = x.mean(axis=1)  # channel-mean map (B, H, W)
    weights = _softmax(-np.abs(m - m.mean(axis=(1, 2), keepdims=True)).reshape(b, h * w), axis=1)
    g = np.einsum("bcp,bp->bc", x.reshape(b, c, h * w), weights)
    return x * _normalised_gate(g, gamma, beta)[:, :, None, None]


def numpy_na_paper(x, gamma, beta):
    b, c, h, w = x.shape
    context = x.mean(axis=(2, 3), keepdims=True)
    weights = _softmax(-np.abs(x - context).sum(axis=1).reshape(b, h * w), axis=1)
    g = np.einsum("bcp,bp->bc", x.reshape(b, c, h * w), weights)
    return x * _normalised_gate(g, gamma, beta)[:, :, None, None]


def numpy_se(x, p):
    s = x.mean(axis=(2, 3))
    hidden = np.maximum(s @ p["squeeze.weight"] + p["squeeze.bias"], 0)
    return x * sigmoid(hidden @ p["excite.weight"] + p["excite.bias"])[:, :, None, None]


def numpy_eca(x, p):
    kernel = p["conv.weight"].reshape(-1)
    k, c = len(kernel), x.shape[1]
    s = np.pad(x.mean(axis=(2, 3)), ((0, 0), (k // 2, k // 2)))
    conv = np.stack([s[:, i:i + k] @ kernel for i in range(c)], axis=1)  # cross-correlation, as conv layers
    return x * sigmoid(conv)[:, :, None, None]


def numpy_gct(x, p, eps=1e-5):
    s = p["alpha"] * np.sqrt((x ** 2).sum(axis=(2, 3)) + eps)
    n = p["gamma"] / np.sqrt((s ** 2).mean(axis=1, keepdims=True) + eps)
    return x * (1 + np.tanh(s * n + p["beta"]))[:, :, None, None]


def numpy_simam(x, p, lam=1e-4):
    d = (x - x.mean(axis=(2, 3), keepdims=True)) ** 2
    v = d.sum(axis=(2, 3), keepdims=True) / max(x.shape[2] * x.shape[3] - 1, 1)
    return x * sigmoid(d / (4 * (v + lam)) + 0.5)


def numpy_half(x, p):
    return 0.5 * x


PEERS = {"se": numpy_se, "eca": numpy_eca, "gct": numpy_gct, "simam": numpy_simam, "half": numpy_half}
