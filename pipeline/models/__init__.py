"""The one model factory: `build_model(arch, attention, num_classes, image_size)` builds any network
(networks.py) with any attention module (attention.py) by name, so the DAG names configurations,
never classes. Also here: the fused CPU kernels (fused.py, kernels/), FLOP counts (flops.py), and
the inference predictor with its tolerances (inference.py, tolerances.py).
"""

from __future__ import annotations

from paddle import nn

from pipeline.models.attention import NONE, VARIANTS
from pipeline.models.networks import AlexNet, ResNet18

# The names params.yaml may use; tests/test_models.py checks the schema's enums against them.
NETWORKS = {"alexnet": AlexNet, "resnet18": ResNet18}
ARCHS = tuple(NETWORKS)
ATTENTIONS = (NONE, *VARIANTS)


def build_model(arch: str, attention: str, num_classes: int, image_size: int) -> nn.Layer:
    """The one model factory: any of ARCHS with any of ATTENTIONS."""
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
    if arch not in NETWORKS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    return NETWORKS[arch](num_classes=num_classes, image_size=image_size, attention=attention)


def count_parameters(model: nn.Layer) -> dict:
    """Parameter counts as paddle.summary reports them.

    The total includes BatchNorm running mean/variance, which Paddle keeps as parameters
    with stop_gradient=True; that is how the post's 11,237,412 for ResNet18 arises.
    """
    params = model.parameters()
    return {
        "total": sum(int(p.size) for p in params),
        "trainable": sum(int(p.size) for p in params if not p.stop_gradient),
    }
