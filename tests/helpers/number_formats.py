"""The number formats GPUs compute in, emulated on the CPU (no GPU here).

Tensor cores round the inputs and weights of every convolution and matmul to the format and
accumulate in float32: TF32 (10 mantissa bits, float32's range) for float32 work on Ampere and
later GPUs, bf16 (7 bits) and fp16 (10 bits, largest value 65,504) under autocast. With bf16 and
fp16 the result is stored in the format too, and so are the gradients that flow back through it.
`emulated(fmt)` makes every Conv1D, Conv2D, Linear, matmul and bmm of the models compute so, forward
and backward: the real Paddle ops on rounded operands. Inside an attention module (which
computes in float32 under autocast, Attention) they round as float32 work does on the
same GPU (`float32_as`).

`folded_predictor(model)` stands in for Paddle's GPU predictor: a copy of the model with every
BatchNorm folded into the convolution before it, as the predictor's graph passes fold it, so that
it rounds differently from the eager model. `broken_predictor(model, how)` is a predictor that is
wrong in one place, which the checks must refuse under every format.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np

from pipeline.hardware import paddle_setup

paddle = paddle_setup.import_paddle()
from paddle.autograd import PyLayer  # noqa: E402

from pipeline.models import fused  # noqa: E402
from pipeline.models.attention import Attention  # noqa: E402

FORMATS = ("tf32", "bf16", "fp16")
_VELTKAMP = {"tf32": 2.0**13 + 1}  # splits a float32 at 24 - 13 = 11 significant bits: TF32, to nearest even


def round_to(t, fmt: str | None):
    """`t` (float32) rounded to `fmt` to nearest even, kept as float32; fp16 overflows to inf as on a GPU."""
    if fmt in (None, "fp32"):
        return t
    if fmt == "tf32":
        c = t * _VELTKAMP["tf32"]
        return c - (c - t)
    return t.astype({"bf16": "bfloat16", "fp16": "float16"}[fmt]).astype("float32")


class _Rounded(PyLayer):
    """Rounds the value to `forward_fmt`, and the gradient that flows back through it to `backward_fmt`."""

    @staticmethod
    def forward(ctx, t, forward_fmt, backward_fmt):
        ctx.backward_fmt = backward_fmt
        return round_to(t, forward_fmt)

    @staticmethod
    def backward(ctx, grad):
        return round_to(grad, ctx.backward_fmt)


class _Doubled(PyLayer):
    """The identity, whose gradient comes back twice as large: a backward kernel off by a factor."""

    @staticmethod
    def forward(ctx, t):
        return t * 1

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


FAULTS = ("permuted weight", "wrong backward")


class _Emulation:
    def __init__(self, fmt: str, float32_as: str, fault: str | None, low_precision_logits: bool):
        self.fmt, self.float32_as, self.depth, self.fault = fmt, float32_as, 0, fault
        self.low_precision_logits = low_precision_logits and fmt in ("bf16", "fp16")

    def current(self) -> str:
        return self.float32_as if self.depth else self.fmt

    def operand(self, t):
        """An input or weight of a tensor-core op; low formats also store its gradient in the format."""
        fmt = self.current()
        return _Rounded.apply(t, fmt, fmt if fmt in ("bf16", "fp16") else None)

    def result(self, t):
        """The op's output: stored in the format under bf16/fp16; the gradient reaching it is the
        next (backward) product's operand, so it is rounded in every format."""
        fmt = self.current()
        return _Rounded.apply(t, fmt if fmt in ("bf16", "fp16") else None, fmt)


@contextlib.contextmanager
def emulated(fmt: str, float32_as: str = "tf32", fault: str | None = None, low_precision_logits: bool = False):
    """Within this block every model computes its convolutions and matmuls as a GPU does in `fmt`.

    `fault` makes it a broken GPU: "permuted weight" uses the first convolution's (3 input channels)
    weights with their output channels rolled by one; "wrong backward" doubles the gradient that
    the classifier's last matmul (10 outputs) sends back, so every gradient before it is doubled.
    `low_precision_logits`: under bf16 and fp16 that matmul hands its result on in the format's
    dtype, as autocast does, so the model's logits say what it computed in."""
    nn, F = paddle.nn, paddle.nn.functional
    e = _Emulation(fmt, float32_as, fault, low_precision_logits)
    saved = {(nn.Conv2D, "forward"): nn.Conv2D.forward, (nn.Conv1D, "forward"): nn.Conv1D.forward,
             (nn.Linear, "forward"): nn.Linear.forward, (Attention, "forward"): Attention.forward,
             (paddle, "matmul"): paddle.matmul, (paddle, "bmm"): paddle.bmm, (fused, "applies"): fused.applies}
    matmul, bmm, attention_forward = paddle.matmul, paddle.bmm, Attention.forward

    def conv2d(self, x):
        weight = self.weight
        if e.fault == "permuted weight" and weight.shape[1] == 3:
            weight = paddle.roll(weight, 1, axis=0)
        return e.result(F.conv._conv_nd(
            e.operand(x), e.operand(weight), bias=None, stride=self._stride, padding=self._updated_padding,
            padding_algorithm=self._padding_algorithm, dilation=self._dilation, groups=self._groups,
            data_format=self._data_format, channel_dim=self._channel_dim, op_type=self._op_type,
            use_cudnn=self._use_cudnn)) + (0 if self.bias is None else self.bias.reshape([1, -1, 1, 1]))

    def conv1d(self, x):
        return e.result(F.conv1d(e.operand(x), e.operand(self.weight), padding=self._padding, stride=self._stride,
                                 dilation=self._dilation, groups=self._groups, data_format=self._data_format)) + (
            0 if self.bias is None else self.bias.reshape([1, -1, 1]))

    def linear(self, x):
        classifier = self.weight.shape[1] == 10
        if e.fault == "wrong backward" and classifier:
            x = _Doubled.apply(x)
        y = e.result(F.linear(e.operand(x), e.operand(self.weight))) + (0 if self.bias is None else self.bias)
        if e.low_precision_logits and classifier:
            y = y.astype({"bf16": "bfloat16", "fp16": "float16"}[e.fmt])
        return y

    def attention(self, x):
        e.depth += 1
        try:
            return attention_forward(self, x)
        finally:
            e.depth -= 1

    nn.Conv2D.forward, nn.Conv1D.forward, nn.Linear.forward = conv2d, conv1d, linear
    Attention.forward = attention
    fused.applies = lambda x: False  # a GPU runs na-official and na-paper as the composed ops
    paddle.matmul = lambda a, b, *args, **kw: e.result(matmul(e.operand(a), e.operand(b), *args, **kw))
    paddle.bmm = lambda a, b, *args, **kw: e.result(bmm(e.operand(a), e.operand(b), *args, **kw))
    try:
        yield e
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


# ---- The GPU predictor's stand-in, right and wrong ------------------------------------------------

def _conv_before(model) -> dict:
    """BatchNorm2D -> the Conv2D whose output it normalises, in the order the model defines them."""
    pairs, last_conv = {}, None
    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D):
            last_conv = layer
        elif isinstance(layer, paddle.nn.BatchNorm2D):
            pairs[layer] = last_conv
    return pairs


def fold_batch_norm(model, wrong: bool = False):
    """A copy of the eval-mode `model` with each BatchNorm folded into its convolution (float32, as
    the predictor's pass does) and replaced by the identity. `wrong`: the fold forgets the running
    mean, as a broken pass would."""
    folded = copy.deepcopy(model).eval()
    for bn, conv in _conv_before(folded).items():
        scale = bn.weight.numpy() / np.sqrt(bn._variance.numpy() + bn._epsilon)
        bias = conv.bias.numpy() if conv.bias is not None else np.zeros_like(scale)
        mean = 0 if wrong else bn._mean.numpy()
        conv.weight.set_value((conv.weight.numpy() * scale[:, None, None, None]).astype(np.float32))
        new_bias = ((bias - mean) * scale + bn.bias.numpy()).astype(np.float32)
        if conv.bias is None:
            conv.bias = conv.create_parameter([len(new_bias)], is_bias=True)
        conv.bias.set_value(new_bias)
        bn.forward = lambda x: x
    return folded


def _predictor(model):
    """predict(batch) -> logits, computed by `model` in whatever format is emulated when called."""
    def predict(batch: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return model(paddle.to_tensor(batch)).numpy()

    return predict


def folded_predictor(model):
    """The BatchNorm-folded copy of `model` as a predictor."""
    return _predictor(fold_batch_norm(model))


def broken_predictor(model, how: str):
    """A predictor wrong in one place, as a faulty graph pass would make it: one convolution's output
    channels permuted ("permuted weights"), BatchNorm folded without its running mean ("wrong
    batch-norm fold"; ResNet18 only, AlexNet has none), or the activation after the middle
    convolution lost in a conv + add + act fusion ("lost activation")."""
    wrong = fold_batch_norm(model, wrong=how == "wrong batch-norm fold")
    convs = [layer for layer in wrong.sublayers() if isinstance(layer, paddle.nn.Conv2D)]
    if how == "permuted weights":
        conv = convs[len(convs) // 2]
        conv.weight.set_value(np.roll(conv.weight.numpy(), 1, axis=0))
    elif how == "lost activation":
        relus = [layer for layer in wrong.sublayers() if isinstance(layer, paddle.nn.ReLU)]
        relus[len(relus) // 2].forward = lambda x: x
    elif how != "wrong batch-norm fold":
        raise ValueError(how)
    return _predictor(wrong)


def broken_kinds(arch: str) -> tuple[str, ...]:
    return ("permuted weights", "lost activation") + (("wrong batch-norm fold",) if arch == "resnet18" else ())


# ---- A GPU, as far as the training step needs one ------------------------------------------------

class _GpuPlace:
    """What GradScaler asks of the current place before it agrees to scale."""

    def is_gpu_place(self):
        return True


@contextlib.contextmanager
def gpu_in_format(fmt: str, float32_as: str = "tf32", fault: str | None = None):
    """Within this block "gpu" is the CPU computing as a GPU does in `fmt`: convolutions and matmuls
    emulated (`emulated`), GradScaler scaling as it does on a GPU, and the device reporting that
    float32 runs as `float32_as`; `fault` as in `emulated`. Autocast itself does nothing on the CPU;
    the emulation rounds what it would cast, and hands the logits on in the format's dtype."""
    import paddle.amp.grad_scaler as grad_scaler

    from pipeline.hardware import device as device_module

    set_device, tracer = paddle.set_device, grad_scaler._dygraph_tracer
    float32_format = device_module.float32_format

    class Tracer:  # the real tracer, but on a place GradScaler accepts
        def __getattr__(self, name):
            return _GpuPlace() if name == "_expected_place" else getattr(tracer(), name)

    paddle.set_device = lambda where: set_device("cpu" if str(where).startswith("gpu") else where)
    grad_scaler._dygraph_tracer = Tracer
    device_module.float32_format = lambda dev: float32_as if dev == "gpu" else "fp32"
    try:
        with emulated(fmt, float32_as, fault, low_precision_logits=True):
            yield
    finally:
        paddle.set_device, grad_scaler._dygraph_tracer = set_device, tracer
        device_module.float32_format = float32_format
