"""The checks that compare two computations of a model, under the number formats GPUs compute in.

No GPU here: tests/helpers/number_formats.py emulates TF32, bf16 and fp16 on the CPU (operands of every
convolution and matmul rounded, float32 accumulation, forward and backward) and stands in for
Paddle's GPU predictor with a BatchNorm-folded copy. The real `inference.check_against_eager`
and the doctor's real comparison judge them: every correct model passes under every format, and
every wrong one is refused. The bounds are pipeline/models/tolerances.py's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.helpers import number_formats as nf

paddle = nf.paddle

from pipeline.images import transforms  # noqa: E402
from pipeline.models import ARCHS, ATTENTIONS, build_model, inference, tolerances  # noqa: E402
from pipeline.tools import doctor  # noqa: E402
from pipeline.train import smoothed_cross_entropy  # noqa: E402

SIZES = {"alexnet": 64, "resnet18": 16}  # the demo's
CHECK_IMAGES = 16


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    grey = (data.images * (255 / 16)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), data.target


def trained(digits, arch: str, attention: str, seed: int, steps: int, start=None):
    """A checkpoint as training leaves it: Adam on the digits (the first CHECK_IMAGES held out) from
    `start`'s weights where it has them (else fresh ones), BatchNorm statistics and every module's
    parameters moved, logits of several units."""
    x_all, y_all = digits
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(arch, attention, 10, SIZES[arch])
    if start is not None:  # the attention's own parameters keep their initial values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Paddle names each parameter `start` does not have
            model.set_state_dict(start.state_dict())
    optimizer = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
    model.train()
    for _ in range(steps):
        index = rng.choice(np.arange(CHECK_IMAGES, len(x_all)), 32, replace=False)
        x = paddle.to_tensor(transforms.test_batch(x_all[index], SIZES[arch]))
        smoothed_cross_entropy(model(x), paddle.to_tensor(y_all[index]), 0.1).backward()
        optimizer.step()
        optimizer.clear_grad()
    return model.eval()


OTHER_RUNS = ("none", "na-blog")  # the baseline, and the variant with the loosest bound


@pytest.fixture(scope="module")
def checkpoints(digits):
    """(arch, attention) -> (this run's trained model, another run's where OTHER_RUNS has one: seed 43,
    4 steps). Each variant fine-tunes the baseline's 16 steps for 4 more of its own (the networks
    share every other weight's name), which costs a third of training each from scratch."""
    models = {}
    for arch in ARCHS:
        baseline = trained(digits, arch, "none", 42, 16)
        for attention in ATTENTIONS:
            model = baseline if attention == "none" else trained(digits, arch, attention, 42, 4, start=baseline)
            other = trained(digits, arch, attention, 43, 4) if attention in OTHER_RUNS else None
            models[arch, attention] = model, other
    return models


def check(model, predict, batch, attention, fmt):
    return inference.check_against_eager(model, predict, batch, attention, "emulated", fmt)


def test_the_emulated_formats_round_as_tensor_cores_do():
    """Round to nearest even at 10 (TF32, fp16) and 7 (bf16) mantissa bits; fp16 overflows past 65,504;
    an emulated matmul is the float32 product of the rounded operands."""
    bits = np.array([0x3F801000, 0x3F803000, 0x3F808000, 0x3F818000], np.uint32)  # halfway cases
    x = paddle.to_tensor(bits.view(np.float32))
    assert nf.round_to(x, "tf32").numpy().view(np.uint32).tolist() == [0x3F800000, 0x3F804000, 0x3F808000,
                                                                           0x3F818000]
    assert nf.round_to(x, "bf16").numpy().view(np.uint32).tolist() == [0x3F800000, 0x3F800000, 0x3F800000,
                                                                           0x3F820000]
    assert np.isinf(nf.round_to(paddle.to_tensor([70000.0]), "fp16").numpy()).all()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 300)).astype(np.float32), rng.standard_normal((300, 5)).astype(np.float32)
    with nf.emulated("bf16"):
        got = paddle.matmul(paddle.to_tensor(a), paddle.to_tensor(b)).numpy()
    rounded = [nf.round_to(paddle.to_tensor(t), "bf16").numpy().astype(np.float64) for t in (a, b)]
    exact = rounded[0] @ rounded[1]
    assert np.abs(got - exact).max() <= 2**-8 * np.abs(exact).max()  # the result stored in bf16
    assert np.abs(a @ b - exact).max() > 1e-3  # and the rounding is really there


@pytest.mark.slow
@pytest.mark.parametrize("fmt", nf.FORMATS)
def test_the_predictor_check_passes_every_correct_model_and_refuses_wrong_ones(digits, checkpoints, fmt):
    """Both sides as on a GPU: the eager model in the format or in float32 (cuDNN may pick a
    float32 algorithm for one and TF32 for the other), the predictor folded and in the format."""
    worst, least_wrong = {}, {}
    for (arch, attention), (model, other_run) in checkpoints.items():
        batch = transforms.test_batch(digits[0][:CHECK_IMAGES], SIZES[arch])
        with nf.emulated(fmt):
            predict = nf.folded_predictor(model)
            result = check(model, predict, batch, attention, fmt)  # eager in the format too
        with nf.emulated(fmt):
            predicted = predict(batch)
        result_fp32 = check(model, lambda _, p=predicted: p, batch, attention, fmt)  # eager in float32
        worst[arch, attention] = max(result["max_logit_diff"], result_fp32["max_logit_diff"]) / result["tolerance"]
        with nf.emulated(fmt):
            wrong = {how: nf.broken_predictor(model, how) for how in nf.broken_kinds(arch)}
            if other_run is not None:
                wrong["another run's checkpoint"] = nf.folded_predictor(other_run)
            eager = model(paddle.to_tensor(batch)).numpy()
            for how, predict_wrong in wrong.items():
                off = float(np.abs(predict_wrong(batch) - eager).max()) / result["tolerance"]
                least_wrong[arch, attention] = min(least_wrong.get((arch, attention), np.inf), off)
                with pytest.raises(inference.PredictorMismatch, match=f"allowed .* in {fmt}"):
                    check(model, predict_wrong, batch, attention, fmt)
                    pytest.fail(f"{arch} + {attention} in {fmt}: {how} passed")
    print(f"{fmt}: largest difference over its bound, per model: "
          + ", ".join(f"{a}+{v} {r:.2f}" for (a, v), r in worst.items()))
    print(f"{fmt}: the least wrong predictor's difference over the bound, per model: "
          + ", ".join(f"{a}+{v} {r:.1f}" for (a, v), r in least_wrong.items()))
    assert max(worst.values()) <= 1


def emulated_gpu(amp: str, fault: str | None = None):
    """The doctor's GPU in `amp`, emulated: fp32 runs as TF32 (an Ampere or later GPU)."""
    return nf.gpu_in_format("tf32" if amp == "fp32" else amp, fault=fault)


def doctor_batch(arch: str, size: int):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((doctor.STEP_IMAGES, 3, size, size)).astype(np.float32),
            rng.integers(0, doctor.CLASSES, doctor.STEP_IMAGES))


@pytest.mark.slow
def test_the_doctor_passes_a_healthy_emulated_gpu_for_every_model():
    """Every mode at once, as `doctor` runs them: fp32 as TF32, bf16, fp16 (each emulated)."""
    for arch in ARCHS:
        batch, labels = doctor_batch(arch, SIZES[arch])
        for attention in ATTENTIONS:
            cpu = doctor.forward_backward(arch, attention, SIZES[arch], "cpu", "fp32", None, batch, labels)
            parts, failed = doctor.compare_on_gpu(arch, attention, SIZES[arch], cpu, batch, labels, emulated_gpu)
            assert not failed, (arch, attention, parts)
            assert parts[0].startswith("fp32 as tf32 ") and parts[1].startswith("bf16 ")


@pytest.mark.slow
@pytest.mark.parametrize("fault", nf.FAULTS)
@pytest.mark.parametrize("fmt", nf.FORMATS)
def test_the_doctor_fails_a_broken_emulated_gpu(fault, fmt):
    """One permuted weight shows in the logits; a backward kernel off by a factor only in the
    logits after the gradient step, which is why the doctor takes one."""
    amp = "fp32" if fmt == "tf32" else fmt
    for arch in ARCHS:
        batch, labels = doctor_batch(arch, SIZES[arch])
        cpu = doctor.forward_backward(arch, "none", SIZES[arch], "cpu", "fp32", None, batch, labels)
        lr = doctor.step_size(arch, "none", SIZES[arch], cpu, batch)
        with emulated_gpu(amp, fault):
            gpu = doctor.forward_backward(arch, "none", SIZES[arch], "gpu", amp, cpu.start, batch, labels)
            after = doctor.logits_after_step(arch, "none", SIZES[arch], "gpu", amp, cpu.start, gpu.grads, lr, batch)
        after_cpu = doctor.logits_after_step(arch, "none", SIZES[arch], "cpu", "fp32", cpu.start, cpu.grads, lr, batch)
        scale, bound = tolerances.logit_scale(cpu.logits), tolerances.relative_bound(fmt, "none")
        before = np.abs(gpu.logits - cpu.logits).max() / scale
        stepped = np.abs(after - after_cpu).max() / scale
        if fault == "wrong backward":
            assert before <= bound < stepped, (arch, before, stepped)
        else:
            assert bound < before, (arch, before)


@pytest.mark.slow
def test_an_fp16_step_that_overflows_is_skipped_as_in_training_and_the_next_one_compared():
    """AlexNet at the paper's 128 px: GradScaler's first scale, 2^16, makes the classifier's scaled
    gradients overflow fp16 (about 2.9e5 > 65,504). On a GPU that step is skipped; the doctor halves
    the scale as training does and compares the first step that fits, within fp16's bound."""
    batch, labels = doctor_batch("alexnet", 128)
    cpu = doctor.forward_backward("alexnet", "none", 128, "cpu", "fp32", None, batch, labels)
    with emulated_gpu("fp16"):
        gpu = doctor.forward_backward("alexnet", "none", 128, "gpu", "fp16", cpu.start, batch, labels)
    assert gpu.skipped >= 1 and gpu.precision == "fp16"
    assert np.abs(gpu.logits - cpu.logits).max() <= tolerances.logit_bound("fp16", "none", cpu.logits)
