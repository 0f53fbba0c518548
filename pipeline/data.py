"""Stage `data`: get each dataset the profile needs and store it as uint8 NHWC arrays.

CIFAR-10/100 come from the official archives (downloaded, or placed in the raw folder by the
user) and are checked against their md5 before anything is read. The demo's digits come from
scikit-learn's wheel and go through the same prepared format:
    data/prepared/<dataset>.npz: train_images, train_labels, test_images, test_labels,
    class_names (+ coarse labels and names for CIFAR-100).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import PipelineError, atomic, config, paths

OFFICIAL_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR = {
    "cifar10": {
        "archive": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
        "test": ["cifar-10-batches-py/test_batch"],
        "meta": "cifar-10-batches-py/batches.meta",
        "labels": {"labels": "label_names"},
    },
    "cifar100": {
        "archive": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": ["cifar-100-python/train"],
        "test": ["cifar-100-python/test"],
        "meta": "cifar-100-python/meta",
        "labels": {"fine_labels": "fine_label_names", "coarse_labels": "coarse_label_names"},
    },
}


class DataError(PipelineError):
    """A dataset could not be obtained or read; the message says what to do."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, target: Path) -> None:
    """Stream `url` to `target` with a progress bar; `target` appears only when complete."""
    with urllib.request.urlopen(url, timeout=30) as response, atomic.atomic_path(target) as tmp:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(tmp, "wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=target.name, mininterval=1
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))


def fetch_archive(dataset: str, download: dict) -> Path:
    """The verified archive for a CIFAR dataset: found in raw_dir, or downloaded there."""
    spec = CIFAR[dataset]
    name = spec["archive"]
    expected = download["md5"].get(name, spec["md5"])
    target = Path(download["raw_dir"]) / name
    if not target.exists():
        urls = [m.rstrip("/") + "/" + name for m in download["mirrors"]] + [OFFICIAL_BASE_URL + name]
        failures = []
        for url in urls:
            try:
                _download(url, target)
                break
            except urllib.error.HTTPError as exc:
                failures.append(f"{url} (HTTP {exc.code} {exc.reason})")
            except (urllib.error.URLError, OSError) as exc:
                failures.append(f"{url} ({getattr(exc, 'reason', exc)})")
        else:
            raise DataError(
                f"could not download {name}: tried {'; '.join(failures)}. Offline? Download {name} "
                f"from {OFFICIAL_BASE_URL + name} and put it at {target}, or set download.mirrors in params.yaml"
            )
    actual = md5sum(target)
    if actual != expected:
        raise DataError(
            f"{target} has md5 {actual}, expected {expected}. Delete it to download again, or if it is a "
            f"re-packed copy you trust, set download.md5.{name}: {actual} in params.yaml"
        )
    return target


class _CifarUnpickler(pickle.Unpickler):
    """Only what the official CIFAR pickles need; anything else is refused, not executed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")


def _read_member(tar: tarfile.TarFile, member: str, archive: Path) -> dict:
    try:
        raw = tar.extractfile(member).read()
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (KeyError, AttributeError):
        raise DataError(f"{archive} has no {member}; it is not an official CIFAR python archive") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{archive}: cannot read {member} ({exc}); delete the archive and fetch it again") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar(dataset: str, archive: Path) -> dict:
    """The official python-pickle archive, read in memory (nothing is extracted to disk)."""
    spec = CIFAR[dataset]
    try:
        tar = tarfile.open(archive, "r:gz")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{archive} is not a readable .tar.gz ({exc}); delete it and fetch it again") from None
    with tar:
        meta = _read_member(tar, spec["meta"], archive)
        arrays: dict[str, np.ndarray] = {}
        for split in ("train", "test"):
            batches = [_read_member(tar, m, archive) for m in spec[split]]
            data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
            arrays[f"{split}_images"] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
            for key in spec["labels"]:
                prefix = "" if key in ("labels", "fine_labels") else "coarse_"
                arrays[f"{split}_{prefix}labels"] = np.concatenate([np.asarray(b[key], np.int64) for b in batches])
    for key, names_key in spec["labels"].items():
        prefix = "" if key in ("labels", "fine_labels") else "coarse_"
        arrays[f"{prefix}class_names"] = np.array([n.decode() for n in meta[names_key]])
    return arrays


def read_digits(test_fraction: float = 1 / 6) -> dict:
    """scikit-learn's 1,797 8x8 digits as 32x32 RGB uint8, split per class by a fixed permutation."""
    import cv2
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images * (255 / 16)).astype(np.uint8)
    images = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_CUBIC) for im in small])
    images = np.repeat(images[..., None], 3, axis=3)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: round(len(members) * test_fraction)]] = True
    order = rng.permutation(len(labels))  # shuffle so the first 18 test images mix classes
    train_idx, test_idx = order[~test[order]], order[test[order]]
    return {
        "train_images": images[train_idx], "train_labels": labels[train_idx],
        "test_images": images[test_idx], "test_labels": labels[test_idx],
        "class_names": np.array([str(c) for c in range(10)]),
    }


def prepare(dataset: str, download: dict) -> dict:
    if dataset == "digits":
        return read_digits()
    return read_cifar(dataset, fetch_archive(dataset, download))


def load_prepared(dataset: str) -> dict:
    path = paths.prepared(dataset)
    if not path.exists():
        raise DataError(f"{path} is missing; run the data stage first (snakemake --cores 4 all or dvc repro)")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def main(params: dict) -> None:
    out_dir = paths.PREPARED
    with atomic.atomic_dir(out_dir) as tmp_dir:
        for dataset in config.datasets(params):
            arrays = prepare(dataset, params["download"])
            np.savez(tmp_dir / f"{dataset}.npz", **arrays)
            print(
                f"{dataset}: {len(arrays['train_labels'])} train / {len(arrays['test_labels'])} test images, "
                f"{len(arrays['class_names'])} classes -> {out_dir / (dataset + '.npz')}"
            )

