"""The pooled NA variants (na-official, na-paper) fused for the CPU: forward and backward written
out in C++ (pipeline/models/kernels/na_kernels.cc), wrapped in a PyLayer.

Composed of Paddle ops, a pooled NA is a chain of small memory-bound CPU kernels that cost
AlexNet's training step a good share of its time; `python -m pipeline bench` measures what the
fused version costs. models.PooledNA keeps the composed version: it is the reference the tests hold this one to,
and what runs on a GPU, in float16/bfloat16, and in exported models.

The kernels are compiled on first use with Paddle's JIT extension builder (once per source and
Paddle version) into ~/.cache/na-repro/kernels/, under a file lock, since Snakemake
may start several trainings at once. Without a C++ compiler the composed version runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import warnings
from pathlib import Path

import paddle
from paddle.autograd import PyLayer

from pipeline.core.logs import native_output_hidden

SOURCE = Path(__file__).parent / "kernels" / "na_kernels.cc"
_module = None  # the loaded extension; False once building failed


def cache_dir() -> Path:
    """One build directory per (source, Paddle, Python), so an upgrade rebuilds."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "na-repro" / "kernels"
    tag = hashlib.sha256(SOURCE.read_bytes() + paddle.__version__.encode() + sys.version.encode()).hexdigest()
    return root / tag[:16]


def _build():
    from paddle.utils.cpp_extension import load

    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    with open(build / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one compiler at a time; the others then load its result
        if not any(build.rglob("*.so")):
            print(f"NA: compiling the fused CPU kernels into {build} (once, about 20 s)", file=sys.stderr, flush=True)
        with warnings.catch_warnings(), native_output_hidden():
            warnings.simplefilter("ignore")  # "No ccache found"
            return load(name="na_kernels", sources=[str(SOURCE)], extra_cxx_cflags=["-O3", "-fopenmp-simd"],
                        build_directory=str(build))


def kernels():
    """The compiled extension, or None (with a one-line note on stderr, once) if it cannot be built."""
    global _module
    if _module is None:
        try:
            _module = _build()
        except Exception as error:  # any build failure leaves the composed version, which is correct
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            print(f"NA: the fused CPU kernels did not build ({first_line}); using Paddle ops instead "
                  "(same results, slower). Install a C++ compiler (g++) to get them.", file=sys.stderr)
            _module = False
    return _module or None


def applies(x: paddle.Tensor) -> bool:
    """True where the fused version can stand in: eager mode (an exported model keeps plain ops,
    so Paddle Inference needs no extension), float32, on the CPU, kernels built."""
    return (paddle.in_dynamic_mode() and x.dtype == paddle.float32 and x.place.is_cpu_place()
            and kernels() is not None)


class PooledNAFunction(PyLayer):
    """models.PooledNA's forward, y = x * sigmoid(gamma * normalise(g) + beta), in two C++ ops.

    `l1`: na-paper's score (L1 distance to the centre) rather than na-official's (channel mean).
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, l1: bool):
        b, c, h, w = x.shape
        flat = x.reshape((b, c, h * w))
        y, *saved = kernels().na_pooled_forward(flat, gamma, beta, l1)
        ctx.save_for_backward(flat, *saved, gamma)
        ctx.l1 = l1
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad_y):
        flat, *saved = ctx.saved_tensor()
        grad_x, grad_params = kernels().na_pooled_backward(flat, grad_y.reshape(flat.shape), *saved, ctx.l1)
        grad_gamma, grad_beta = grad_params.sum(axis=0).split(2)
        return grad_x.reshape(grad_y.shape), grad_gamma, grad_beta
