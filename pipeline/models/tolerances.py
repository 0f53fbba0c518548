"""How far two computations of one model may differ: bounds that follow from the number format.

A GPU rounds the operands of every convolution and matmul to the format it computes in and
accumulates in float32: TF32 (float32 work on Ampere and later GPUs, which Paddle allows by
default), bf16 or fp16 (autocast). Each product then carries a relative error of about the
format's unit roundoff u, and a model's logits differ from an exact float32 computation by a few
u of their own scale. In float32 proper the operands are exact and only the order of the float32
sums differs between kernels: for sums of up to 2^14 terms that is about sqrt(2^14) * 2^-24 =
2^-17, the unit used for fp32.

A bound is BOUND_UNITS units of the format, relative to the scale of what is compared: the largest
logit, at least 1 (doctor compares gradients through the logits after a step with them). The
emulated formats (tests/helpers/number_formats.py) put every correct model within a third of it on trained
checkpoints, and every wrong one
(permuted weights, another run's checkpoint, BatchNorm folded wrongly, a lost activation) at
least 3.6 times above it (6 times, na-blog aside). The evaluate stage
(inference.check_against_eager) and `doctor` both use these bounds.

na-blog is the exception: its output is float rounding noise amplified to order one (its context
sums a softmax, docs/the-post.md), which any other rounding draws afresh, in float32 as in any
other format. No format bounds it; NA_BLOG_BOUND is measured: twice the largest difference seen
between two correct computations (5% of the logit scale, AlexNet at 128 px against its predictor
emulated in bf16; 3% for the real oneDNN predictor on the CPU).
"""

from __future__ import annotations

FORMATS = ("fp32", "tf32", "bf16", "fp16")
UNIT_ROUNDOFF = {"fp32": 2.0**-17, "tf32": 2.0**-11, "bf16": 2.0**-8, "fp16": 2.0**-11}
BOUND_UNITS = 16
NA_BLOG_BOUND = 0.1


def relative_bound(number_format: str, attention: str) -> float:
    """The largest difference allowed, as a fraction of the scale of what is compared."""
    if attention == "na-blog":
        return max(NA_BLOG_BOUND, BOUND_UNITS * UNIT_ROUNDOFF[number_format])
    return BOUND_UNITS * UNIT_ROUNDOFF[number_format]


def logit_scale(logits) -> float:
    """The scale two models' logits are compared at: the largest logit, and at least 1 (the
    rounding of a layer follows the size of its activations, which small logits do not show)."""
    return max(1.0, float(abs(logits).max()))


def logit_bound(number_format: str, attention: str, logits) -> float:
    """The largest logit difference allowed from the reference `logits` (a NumPy array)."""
    return relative_bound(number_format, attention) * logit_scale(logits)
