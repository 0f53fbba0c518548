"""Build small archives in the official CIFAR python format (same members, keys and dtypes)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _add(tar: tarfile.TarFile, name: str, obj, protocol: int = 3) -> None:
    # Protocol 3 keeps bytes as bytes and arrays as numpy's _reconstruct call, as the
    # official (Python 2) files do; protocol 2, as a re-pack by Python 3 may use, routes
    # bytes through _codecs.encode.
    data = pickle.dumps(obj, protocol=protocol)
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _batch(rng, n: int, classes: int, **extra_labels) -> dict:
    return {
        b"batch_label": b"testing batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
        **extra_labels,
    }


def cifar10(path: Path, per_batch: int = 20, seed: int = 0, protocol: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-10-batches-py/batches.meta",
             {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            _add(tar, f"cifar-10-batches-py/{name}",
                 {**_batch(rng, per_batch, 10), b"labels": [int(x) for x in rng.integers(0, 10, per_batch)]},
                 protocol)
    return path


def cifar100(path: Path, train: int = 60, test: int = 20, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "cifar-100-python/meta", {
            b"fine_label_names": [b"class_%d" % i for i in range(100)],
            b"coarse_label_names": [b"super_%d" % i for i in range(20)],
        })
        for name, n in (("train", train), ("test", test)):
            _add(tar, f"cifar-100-python/{name}", {
                **_batch(rng, n, 100),
                b"fine_labels": [int(x) for x in rng.integers(0, 100, n)],
                b"coarse_labels": [int(x) for x in rng.integers(0, 20, n)],
            })
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
