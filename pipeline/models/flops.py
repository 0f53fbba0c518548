"""Forward FLOPs per image, counted from the layers a model actually runs.

paddle.flops() counts NA as zero (and breaks with NumPy 2.4), so this walks the model with
forward hooks: 2 FLOPs per multiply-add for convolutions and linear layers, and per element
for the rest, attention included. The attention figures are op counts of our code, per
element of the layer's input (each module's `flops_per_element`); they are estimates of work, not of time.
"""

from __future__ import annotations

import paddle
from paddle import nn

from pipeline.models.attention import Attention

ELEMENTWISE_FLOPS = {nn.BatchNorm2D: 2, nn.ReLU: 1, nn.Dropout: 0, nn.Identity: 0}
TRAINING_FACTOR = 3  # forward + backward (gradients for inputs and for weights: about 2x forward)


def forward_flops(model: nn.Layer, image_size: int) -> dict[str, int]:
    """{"conv_linear", "attention", "other", "total"} FLOPs of one image's forward pass."""
    counts = {"conv_linear": 0, "attention": 0, "other": 0}

    def count(layer, inputs, output):
        x = inputs[0]
        if isinstance(layer, Attention):  # its own layers (SE's FCs, ECA's 1-D conv) count as its work
            inner = sum(2 * int(p.size) for p in layer.parameters() if len(p.shape) > 1)
            counts["attention"] += layer.flops_per_element * x.size + inner * x.shape[0]
        elif isinstance(layer, nn.Conv2D):
            kh, kw = layer.weight.shape[2:]
            counts["conv_linear"] += 2 * output.size * layer.weight.shape[1] * kh * kw
        elif isinstance(layer, nn.Linear):
            counts["conv_linear"] += 2 * output.size * layer.weight.shape[0]
        elif isinstance(layer, (nn.MaxPool2D, nn.AdaptiveAvgPool2D)):
            counts["other"] += x.size
        elif type(layer) in ELEMENTWISE_FLOPS:
            counts["other"] += ELEMENTWISE_FLOPS[type(layer)] * x.size

    inside_attention = {id(m) for a in model.sublayers() if isinstance(a, Attention) for m in a.sublayers()}
    hooks = [m.register_forward_post_hook(count) for m in model.sublayers()
             if isinstance(m, Attention) or (not m.sublayers() and id(m) not in inside_attention)]
    model.eval()
    with paddle.no_grad():
        model(paddle.zeros([1, 3, image_size, image_size]))
    for hook in hooks:
        hook.remove()
    return {**counts, "total": sum(counts.values())}
