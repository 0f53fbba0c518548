"""The attention modules, each declared once, where it is defined: its class, the name params.yaml
gives it (`name`) and its forward op count per input element (`flops_per_element`, for
pipeline/models/flops.py). Defining a class with a `name` registers it in VARIANTS; the schema's
enum is checked against VARIANTS by tests/test_models.py.

Op counts per input element, forward: na-blog: mean, subtract, abs, negate, softmax (max, subtract,
exp, sum, divide), sum, gate multiply. na-official: channel mean, weighted pooling (multiply-add),
gate multiply. na-paper: context mean, subtract, abs, channel sum, pooling, gate multiply. se, eca:
pool, gate multiply (their FC / 1-D conv count per channel, in flops.py). gct: square, sum, gate
multiply. simam: mean, subtract, square, sum, divide, add, sigmoid (2), multiply.
"""

from __future__ import annotations

import math

import paddle
from paddle import nn

from pipeline.models import fused

NONE = "none"  # no attention module: the identity, so placement code stays uniform
VARIANTS: dict[str, type[Attention]] = {}  # name -> class, filled as the classes below are defined


def _scalar(layer: nn.Layer, value: float):
    return layer.create_parameter([1], default_initializer=nn.initializer.Constant(value))


class Attention(nn.Layer):
    """The base of every attention module. Each computes (`compute`) in float32 whatever autocast
    says, and hands back the input's dtype. Under bf16 or fp16 autocast the context, softmax, normalisation and
    gate thus stay float32 by construction, not because Paddle's O1 lists happen to keep `mean`
    or `softmax` there: na-blog's output is rounding noise, so the precision of that noise is
    what it computes."""

    name: str  # how params.yaml's `attentions` names it
    flops_per_element: int  # forward ops per input element

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            VARIANTS[cls.name] = cls

    def forward(self, x):
        if not paddle.in_dynamic_mode():  # an exported (static) model has no autocast to escape
            return self.compute(x)
        low = x.dtype in (paddle.float16, paddle.bfloat16)  # float64 (the gradient checks) stays as it is
        with paddle.amp.auto_cast(enable=False):
            y = self.compute(x.astype("float32") if low else x)
        return y.astype(x.dtype) if low else y

    def compute(self, x):
        raise NotImplementedError


def channel_std(g):
    """paddle.std(g, axis=1, keepdim=True), unbiased, bit for bit.

    A CUDA build runs it as one kernel. The CPU build composes it in Python
    (paddle/tensor/stat.py, `var`), which divides two int64 element counts to get N and so
    makes Paddle's C++ print "Got different data type, run type promotion automatically" once
    per process. These are the same ops with N made as a float32 tensor from the start.
    """
    if paddle.is_compiled_with_cuda():
        return paddle.std(g, axis=1, keepdim=True)
    squares = paddle.sum(paddle.pow(g - paddle.mean(g, axis=1, keepdim=True), 2), axis=1, keepdim=True, dtype=g.dtype)
    return paddle.sqrt(squares / paddle.full([], g.shape[1] - 1, g.dtype))


class NABlog(Attention):
    """NA exactly as the blog post computes it (docs/the-post.md#na-blog).

    The op sequence is kept on purpose: step 3 sums a softmax, so `g` is 1 up to float
    rounding and the normalised term is rounding noise. Reordering or fusing the ops changes
    that noise, and with it the published behaviour.
    """

    name, flops_per_element = "na-blog", 11

    def __init__(self, channels: int):
        super().__init__()
        self.gamma, self.beta = _scalar(self, 1.0), _scalar(self, 0.0)

    def context(self, x):
        """g before normalisation, (B, C): the post's steps 1-3."""
        context = paddle.mean(x, axis=[2, 3], keepdim=True)
        g = -paddle.abs(x - context)
        b, c, _, _ = g.shape
        return paddle.sum(nn.functional.softmax(g.reshape((b, c, -1)), axis=2), axis=2)

    def compute(self, x):
        g = self.context(x).unsqueeze([2, 3])  # same kernels as the post's keepdim sum + reshape
        mean = paddle.mean(g, axis=1, keepdim=True)
        std = channel_std(g) + 1e-5
        g = self.gamma * (g - mean) / std + self.beta
        return x * nn.functional.sigmoid(g)


class PooledNA(Attention):
    """Softmax-weighted pooling of x over positions, normalised over channels, as a channel gate.

    Subclasses give the per-position score whose softmax weights the pooling. gamma starts at
    0 and beta at 1, as in the authors' code, so every gate starts at sigmoid(1).

    On the CPU in float32 the forward and backward run fused in C++ (pipeline/models/fused.py);
    `composed` is the same in Paddle ops, written to avoid Paddle's slowest kernels: no
    reduction over the trailing axes of the 4-D tensor (mean over [2, 3] has a very slow
    backward), and sums over channels as matmuls (channel_sum).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gamma, self.beta = _scalar(self, 0.0), _scalar(self, 1.0)

    def scores(self, flat):  # (B, C, H*W) -> (B, H*W), softmax over positions
        raise NotImplementedError

    @staticmethod
    def channel_sum(t, weight: float):
        """weight * sum over channels, (B, C, N) -> (B, N).

        A matmul with a constant row: faster on CPU than a reduction over the middle axis, and
        the row broadcasts over the batch, which may then stay dynamic (paddle.jit.save).
        """
        return paddle.matmul(paddle.full([1, t.shape[1]], weight, t.dtype), t).squeeze(1)

    def context(self, x):
        """g before normalisation, (B, C): sum over positions of w_i * x_{c,i}."""
        b, c, h, w = x.shape
        flat = x.reshape((b, c, h * w))
        weights = nn.functional.softmax(self.scores(flat), axis=1)
        return paddle.bmm(flat, weights.unsqueeze(2)).squeeze(2)

    def compute(self, x):
        if fused.applies(x):  # the same computation, fused for the CPU (pipeline/models/fused.py)
            return fused.PooledNAFunction.apply(x, self.gamma, self.beta, self.l1_score)
        return self.composed(x)

    def composed(self, x):
        """The forward in Paddle ops: on GPUs, in exported models, and the reference for the fused one."""
        g = self.context(x)
        g = (g - g.mean(axis=1, keepdim=True)) / (channel_std(g) + 1e-5)
        gate = nn.functional.sigmoid(self.gamma * g + self.beta)
        return x * gate.unsqueeze([2, 3])


class NAOfficial(PooledNA):
    """The authors' code (NANet, resnet_na4.py): score = -|m - mean(m)| of the channel-mean map m."""

    name, flops_per_element = "na-official", 4

    l1_score = False  # for fused.PooledNAFunction

    def scores(self, flat):
        m = self.channel_sum(flat, 1.0 / flat.shape[1])
        return -paddle.abs(m - m.mean(axis=1, keepdim=True))


class NAPaper(PooledNA):
    """The paper's printed formula read sensibly: score = -||x_i - C||_1, C the pooled context."""

    name, flops_per_element = "na-paper", 7

    l1_score = True  # for fused.PooledNAFunction

    def scores(self, flat):
        return self.channel_sum(paddle.abs(flat - flat.mean(axis=2, keepdim=True)), -1.0)


class Gate(Attention):
    """The control: y = x * sigmoid(beta), one learned scalar; what na-blog reduces to."""

    name, flops_per_element = "gate", 1

    def __init__(self, channels: int):
        super().__init__()
        self.beta = _scalar(self, 0.0)

    def compute(self, x):
        return x * nn.functional.sigmoid(self.beta)


class Half(Attention):
    """The initial-scale control: y = 0.5 * x, fixed; na-blog's and the gate's value at initialisation."""

    name, flops_per_element = "half", 1

    def __init__(self, channels: int):
        super().__init__()

    def compute(self, x):
        return 0.5 * x


def _spatial_mean(x):
    """(B, C, H, W) -> (B, C); over a reshape, since mean over [2, 3] has a very slow CPU backward."""
    return x.reshape((x.shape[0], x.shape[1], -1)).mean(axis=2)


class SE(Attention):
    """Squeeze-and-excitation (Hu et al.): global average pool, FC C -> C/16 with ReLU, FC C/16 -> C,
    sigmoid, channel gate; the FC layers have biases, as in the reference code."""

    name, flops_per_element = "se", 2

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze, self.excite = nn.Linear(channels, hidden), nn.Linear(hidden, channels)

    def compute(self, x):
        gate = nn.functional.sigmoid(self.excite(nn.functional.relu(self.squeeze(_spatial_mean(x)))))
        return x * gate.unsqueeze([2, 3])


def eca_kernel_size(channels: int) -> int:
    """The ECA authors' rule: t = int(|(log2 C + 1) / 2|), k = t if odd else t + 1 (3 at 48 channels, 5 at 128)."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


class ECA(Attention):
    """ECA-Net (Wang et al., CVPR 2020): global average pool, a 1-D convolution across channels
    without bias (zero padding k // 2), sigmoid, channel gate: k parameters."""

    name, flops_per_element = "eca", 2

    def __init__(self, channels: int):
        super().__init__()
        k = eca_kernel_size(channels)
        self.conv = nn.Conv1D(1, 1, k, padding=k // 2, bias_attr=False)

    def compute(self, x):
        gate = nn.functional.sigmoid(self.conv(_spatial_mean(x).unsqueeze(1)).squeeze(1))
        return x * gate.unsqueeze([2, 3])


class GCT(Attention):
    """Gated channel transformation (Yang et al., CVPR 2020), a normalisation-based gate like NA:
    s = alpha * sqrt(sum over positions of x^2 + eps), n = gamma / sqrt(mean over channels of s^2 + eps),
    y = x * (1 + tanh(s * n + beta)); alpha, gamma, beta per channel start at 1, 0, 0 (the identity)."""

    name, flops_per_element = "gct", 3

    eps = 1e-5

    def __init__(self, channels: int):
        super().__init__()

        def per_channel(value):
            return self.create_parameter([channels], default_initializer=nn.initializer.Constant(value))
        self.alpha, self.gamma, self.beta = per_channel(1.0), per_channel(0.0), per_channel(0.0)

    def compute(self, x):
        squares = (x * x).reshape((x.shape[0], x.shape[1], -1)).sum(axis=2)
        s = self.alpha * paddle.sqrt(squares + self.eps)
        n = self.gamma / paddle.sqrt((s * s).mean(axis=1, keepdim=True) + self.eps)
        return x * (1 + paddle.tanh(s * n + self.beta)).unsqueeze([2, 3])


class SimAM(Attention):
    """SimAM (Yang et al., ICML 2021), no parameters: per channel d = (x - mean)^2 over positions,
    v = sum(d) / (H*W - 1), y = x * sigmoid(d / (4 (v + 1e-4)) + 0.5); on a 1x1 map, where H*W - 1 = 0
    and d = 0, v = 0 (the authors' division gives NaN there)."""

    name, flops_per_element = "simam", 9

    lam = 1e-4

    def __init__(self, channels: int):
        super().__init__()

    def compute(self, x):
        b, c, h, w = x.shape
        flat = x.reshape((b, c, h * w))
        d = (flat - flat.mean(axis=2, keepdim=True)) ** 2
        v = d.sum(axis=2, keepdim=True) / max(h * w - 1, 1)  # a 1x1 map (ResNet18's last stage at 16 px) has d = 0
        return x * nn.functional.sigmoid(d / (4 * (v + self.lam)) + 0.5).reshape((b, c, h, w))


def make_attention(name: str, channels: int) -> nn.Layer:
    """One attention module by name for a `channels`-channel input; `none` is the identity, so
    placement code stays uniform. Every module takes the channel count, needed or not."""
    if name == NONE:
        return nn.Identity()
    if name not in VARIANTS:
        raise ValueError(f"unknown attention {name!r}; choose one of {', '.join([NONE, *VARIANTS])}")
    return VARIANTS[name](channels)
