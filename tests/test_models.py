"""The model factory, parameter counts as the post reports them, and the blog's NA module."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from pipeline.hardware import paddle_setup

paddle = paddle_setup.import_paddle()

from pipeline.models import ATTENTIONS, build_model, count_parameters  # noqa: E402
from pipeline.models.attention import NABlog  # noqa: E402
from tests.helpers.numpy_attention import PEERS, numpy_na_official, numpy_na_paper, sigmoid  # noqa: E402

POST_COUNTS = {("alexnet", "none"): 7_524_042, ("alexnet", "na-blog"): 7_524_052,
               ("resnet18", "none"): 11_237_412, ("resnet18", "na-blog"): 11_237_428}


@pytest.mark.parametrize("arch, attention", list(POST_COUNTS))
def test_parameter_counts_match_the_post_at_paper_settings(arch, attention):
    classes = 10 if arch == "alexnet" else 100
    model = build_model(arch, attention, classes, 128)
    assert count_parameters(model)["total"] == POST_COUNTS[arch, attention]
    # paddle.summary is what the post used; it must agree with our count.
    assert paddle.summary(model, (1, 3, 128, 128))["total_params"] == POST_COUNTS[arch, attention]


def test_resnet18_count_includes_batchnorm_statistics():
    counts = count_parameters(build_model("resnet18", "none", 100, 128))
    assert counts["total"] - counts["trainable"] == 9_600


@pytest.mark.parametrize("size, features", [(128, 1152), (64, 128), (96, 512)])
def test_alexnet_classifier_follows_image_size(size, features):
    model = build_model("alexnet", "na-blog", 10, size)
    assert model.classifier[0].weight.shape == [features, 2048]
    assert model(paddle.randn([2, 3, size, size])).shape == [2, 10]


def test_too_small_alexnet_is_refused_clearly():
    with pytest.raises(ValueError, match="at least 57 px"):
        build_model("alexnet", "none", 10, 32)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", "none", 10, 128)
    with pytest.raises(ValueError, match="unknown attention"):
        build_model("alexnet", "cbam", 10, 128)


def test_na_sits_after_each_conv_and_after_bn2():
    alexnet = build_model("alexnet", "na-blog", 10, 128)
    layers = list(alexnet.features)
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, paddle.nn.Conv2D)]
    assert len(convs) == 5 and all(isinstance(layers[i + 1], NABlog) for i in convs)
    resnet = build_model("resnet18", "na-blog", 100, 128)
    assert sum(isinstance(m, NABlog) for m in resnet.sublayers()) == 8


def post_na_forward(x, gamma, beta):
    """The post's NA.forward, verbatim but for the module wrapper (docs/the-post.md#na-blog)."""
    C = paddle.mean(x, axis=[2, 3], keepdim=True)
    g = -paddle.abs(x - C)
    b, c, h, w = g.shape  # noqa: RUF059 - kept verbatim from the post
    g = paddle.sum(paddle.nn.Softmax(axis=2)(g.reshape((b, c, -1))), axis=2, keepdim=True).reshape((b, c, 1, 1))
    mean = paddle.mean(g, axis=1, keepdim=True)
    std = paddle.std(g, axis=1, keepdim=True) + 1e-5
    g = gamma * (g - mean) / std + beta
    return x * paddle.nn.Sigmoid()(g)


@pytest.mark.parametrize("gamma, beta", [(1.0, 0.0), (-2.5, 0.7)])
def test_na_blog_equals_the_posts_code_forward_and_backward(gamma, beta):
    paddle.seed(0)
    x = paddle.randn([4, 48, 16, 16])
    x.stop_gradient = False
    na = NABlog(48)
    na.gamma.set_value(paddle.full([1], gamma))
    na.beta.set_value(paddle.full([1], beta))
    ours, post = na(x), post_na_forward(x, na.gamma, na.beta)
    assert np.array_equal(ours.numpy(), post.numpy())
    weights = paddle.randn(ours.shape)
    grads = [paddle.grad((y * weights).sum(), [x, na.gamma, na.beta]) for y in (ours, post)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(*grads, strict=True))
    assert [p.shape for p in na.parameters()] == [[1], [1]]


def test_na_blog_prints_no_type_promotion_warning():
    code = ("from pipeline.hardware import paddle_setup; paddle = paddle_setup.import_paddle(); "
            "from pipeline.models import build_model; "
            "m = build_model('alexnet', 'na-blog', 10, 64); m(paddle.randn([2, 3, 64, 64])).sum().backward()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "type promotion" not in done.stderr


def test_params_command_prints_the_posts_counts(project):
    from tests.conftest import run

    out = run(["python", "-m", "pipeline", "params", "--profile", "paper"], cwd=project).stdout
    for experiment, count in zip(("alexnet-none", "alexnet-na-blog", "resnet18-none", "resnet18-na-blog"),
                                 POST_COUNTS.values(), strict=True):
        line = next(x for x in out.splitlines() if x.startswith(experiment + " "))
        assert f"{count:,}" in line and line.endswith("yes")
    assert "all 12 runs: ~" in out and "GPU minutes (an estimate, not a measurement)" in out
    # the price of each choice: a variant runs on every architecture at every seed; a seed reruns every configuration
    total = int(re.search(r"all 12 runs: ~(\d+)", out)[1])
    per_run = {e: int(m) for e, m in re.findall(r"^(\S+-none) .* ~(\d+) min$", out, re.M)}
    choices = r"each attention added to `attentions`: ~(\d+) .*each seed added to `seeds`: ~(\d+)"
    variant, seed = map(int, re.search(choices, out).groups())
    assert abs(variant - 2 * sum(per_run.values())) <= 2 and abs(seed - total / 2) <= 1
    # every variant, run or not, with what its attention adds: SE's C -> C/16 -> C FCs in AlexNet's
    # five convs (48, 128, 192, 192, 128 channels), ECA's k = 3, 5, 5, 5, 5 weights
    added = {tuple(line.split()[:2]): int(line.split()[3].replace(",", "")) for line in out.splitlines()
             if line.split()[:1] in (["alexnet"], ["resnet18"]) and len(line.split()) == 5}
    from pipeline.models import ATTENTIONS

    assert {a for arch, a in added if arch == "alexnet"} == set(ATTENTIONS)
    se = sum(c * (c // 16) * 2 + c // 16 + c for c in (48, 128, 192, 192, 128))
    assert (added["alexnet", "se"], added["alexnet", "eca"], added["alexnet", "half"]) == (se, 23, 0)
    assert added["resnet18", "na-blog"] == 16 and added["resnet18", "gct"] == 3 * 2 * (64 + 128 + 256 + 512)


@pytest.mark.parametrize("name, reference", [("na-official", numpy_na_official), ("na-paper", numpy_na_paper)])
@pytest.mark.parametrize("shape", [(2, 48, 15, 15), (3, 512, 4, 4), (1, 8, 32, 32)])
def test_pooled_na_variants_match_numpy(name, reference, shape):
    from pipeline.models.attention import make_attention

    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=shape).astype(np.float32)
    layer = make_attention(name, shape[1])
    assert (layer.gamma.item(), layer.beta.item()) == (0.0, 1.0)  # the authors' initialisation
    layer.gamma.set_value(paddle.to_tensor([0.7]))  # gamma = 0 would hide the context entirely
    layer.beta.set_value(paddle.to_tensor([-0.3]))
    expected = reference(x.astype(np.float64), 0.7, -0.3)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), expected, atol=1e-5, rtol=1e-5)
    assert len(layer.parameters()) == 2


def test_gate_is_one_scalar_sigmoid():
    from pipeline.models.attention import make_attention

    gate = make_attention("gate", 8)
    gate.beta.set_value(paddle.to_tensor([0.4]))
    x = np.random.default_rng(1).normal(size=(2, 8, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(gate(paddle.to_tensor(x)).numpy(), x * sigmoid(0.4), atol=1e-6)
    assert [p.shape for p in gate.parameters()] == [[1]]


# ---- the peers, each against an independent NumPy version (float64), with random parameters ----


@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize("shape", [(2, 48, 15, 15), (3, 128, 4, 4), (1, 512, 2, 2)])
def test_peer_modules_match_numpy(name, shape):
    from pipeline.models.attention import make_attention

    rng = np.random.default_rng(sum(shape))
    layer = make_attention(name, shape[1])
    for param in layer.parameters():  # random values, away from initialisations that hide terms
        param.set_value(rng.normal(size=param.shape).astype(np.float32))
    params = {name: p.numpy().astype(np.float64) for name, p in layer.named_parameters()}
    x = rng.normal(size=shape).astype(np.float32)
    expected = PEERS[name](x.astype(np.float64), params)
    np.testing.assert_allclose(layer(paddle.to_tensor(x)).numpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels, k", [(48, 3), (64, 3), (128, 5), (192, 5), (256, 5), (512, 5)])
def test_eca_kernel_size_follows_the_authors_rule(channels, k):
    from pipeline.models.attention import eca_kernel_size, make_attention

    assert eca_kernel_size(channels) == k
    assert sum(int(p.size) for p in make_attention("eca", channels).parameters()) == k


def test_peer_initialisations_and_sizes():
    from pipeline.models.attention import make_attention

    gct = make_attention("gct", 48)  # starts as the identity
    x = paddle.randn([2, 48, 5, 5])
    np.testing.assert_array_equal(gct(x).numpy(), x.numpy())
    assert [p.shape for p in gct.parameters()] == [[48]] * 3
    se = make_attention("se", 128)  # C -> C/16 -> C, with biases
    assert sum(int(p.size) for p in se.parameters()) == 128 * 8 + 8 + 8 * 128 + 128
    assert make_attention("simam", 48).parameters() == [] and make_attention("half", 48).parameters() == []


@pytest.mark.parametrize("shape", [(4, 48, 32, 32), (4, 512, 4, 4)])
def test_na_blog_context_is_one_and_its_normalised_term_is_rounding_noise(shape):
    x = paddle.to_tensor(np.random.default_rng(2).normal(size=shape).astype(np.float32))
    g = NABlog(shape[1]).context(x).numpy()
    assert np.abs(g - 1).max() < 1e-5  # a softmax summed over positions
    noise = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-5)
    assert np.abs(noise).max() > 1e-4  # ...yet the normalisation turns its rounding into a signal
    print(f"na-blog {shape}: |g - 1| <= {np.abs(g - 1).max():.1e}, spread {np.ptp(g, 1).mean():.1e}, "
          f"normalised term std {noise.std():.3f}, range +-{np.abs(noise).max():.3f}")


def test_every_arch_takes_every_attention_and_the_schema_lists_them():
    import itertools
    import json

    from pipeline.dag import config
    from pipeline.models import ARCHS, ATTENTIONS

    properties = json.loads(config.SCHEMA_FILE.read_text())["properties"]
    assert tuple(properties["archs"]["items"]["enum"]) == ARCHS
    assert tuple(properties["attentions"]["items"]["enum"]) == ATTENTIONS
    for arch, attention in itertools.product(ARCHS, ATTENTIONS):
        model = build_model(arch, attention, 10, 64)
        assert model(paddle.randn([1, 3, 64, 64])).shape == [1, 10]


def test_flops_count_every_conv_and_linear_and_the_attention():
    from pipeline.models.flops import forward_flops

    # AlexNet at 128 px by hand: (multiply-adds per output, output positions) of each conv, then the FCs.
    convs = [(3 * 11 * 11 * 48, 32 * 32), (48 * 5 * 5 * 128, 15 * 15), (128 * 9 * 192, 7 * 7),
             (192 * 9 * 192, 7 * 7), (192 * 9 * 128, 7 * 7)]
    fcs = 1152 * 2048 + 2048 * 2048 + 2048 * 10
    expected = 2 * (sum(macs * positions for macs, positions in convs) + fcs)
    counts = {a: forward_flops(build_model("alexnet", a, 10, 128), 128) for a in ("none", "na-blog", "na-official")}
    assert counts["none"]["conv_linear"] == expected and counts["none"]["attention"] == 0
    conv_outputs = 48 * 32 * 32 + 128 * 15 * 15 + (192 + 192 + 128) * 7 * 7  # what each NA layer sees
    assert counts["na-blog"]["attention"] == 11 * conv_outputs
    assert 0 < counts["na-official"]["attention"] < counts["na-blog"]["attention"]
    # SE's work is its pool and gate per element plus its two FCs per channel, none of it in conv_linear
    se = forward_flops(build_model("alexnet", "se", 10, 128), 128)
    fc = sum(2 * 2 * c * (c // 16) for c in (48, 128, 192, 192, 128))
    assert se["conv_linear"] == expected and se["attention"] == 2 * conv_outputs + fc


# ---- mixed precision: every attention variant computes in float32 by construction -------------
ATTENTION_LAYERS = [a for a in ATTENTIONS if a != "none"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ATTENTION_LAYERS)
def test_attention_on_low_precision_input_is_the_float32_computation_cast_back(name, dtype):
    from pipeline.models.attention import make_attention

    layer = make_attention(name, 8)
    for p in layer.parameters():  # away from the initial values, where some variants are constant
        p.set_value(np.full(p.shape, 0.7, np.float32))
    x = paddle.randn([2, 8, 6, 6]).astype(dtype)
    y = layer(x)
    assert y.dtype == x.dtype
    expected = layer(x.astype("float32")).astype(dtype)
    np.testing.assert_array_equal(y.astype("float32").numpy(), expected.astype("float32").numpy())


@pytest.mark.parametrize("name", ATTENTION_LAYERS)
def test_attention_computes_with_autocast_off_inside_an_autocast_region(name):
    """The GPU's O1 autocast, simulated: Paddle turns autocast off on the CPU, so the tracer's AMP
    level is set as auto_cast sets it on a GPU. Inside the module it must be off (every op of the
    context, softmax, normalisation and gate in float32), and on again after it."""
    from paddle.base import core, framework

    from pipeline.models.attention import make_attention

    layer, seen = make_attention(name, 8), []
    compute = layer.compute
    layer.compute = lambda x: (seen.append((framework._dygraph_tracer()._amp_level, x.dtype)), compute(x))[1]
    tracer = framework._dygraph_tracer()
    tracer._amp_level = core.AmpLevel.O1
    try:
        layer(paddle.randn([2, 8, 6, 6]).astype("float16"))
        after = tracer._amp_level
    finally:
        tracer._amp_level = core.AmpLevel.O0
    assert seen == [(core.AmpLevel.O0, paddle.float32)] and after == core.AmpLevel.O1


def test_the_loss_is_computed_in_float32_from_low_precision_logits():
    from pipeline.train import training_step

    class Half(paddle.nn.Layer):  # a network whose logits come out in bf16, as under autocast
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x).astype("bfloat16")

    model = Half()
    optimizer = paddle.optimizer.SGD(parameters=model.parameters())
    logits, loss = training_step(model, optimizer, paddle.randn([5, 4]), paddle.to_tensor([0, 1, 2, 0, 1]), 0.1,
                                 paddle.amp.auto_cast, None)
    assert logits.dtype == paddle.bfloat16 and loss.dtype == paddle.float32
