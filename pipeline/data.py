"""Stage `data`: get the dataset one architecture trains on in the active profile, as uint8 NHWC arrays.

CIFAR-10/100 come from the official archives (downloaded, or placed in the raw folder by the
user) and are checked against their md5 before anything is read. The demo's digits come from
scikit-learn's wheel and go through the same prepared format:
    data/prepared/<profile>/<arch>.npz: train_images, train_labels, test_images, test_labels,
    class_names (+ coarse labels and names for CIFAR-100).
One file per architecture, not per dataset, so that DVC, which can only fill in the matrix's names,
knows each training's input; a profile whose architectures share a dataset stores it twice.
"""

from __future__ import annotations

import http.client
import io
import os
import pickle
import socket
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from pipeline import PipelineError
from pipeline.core import atomic, logs, stage
from pipeline.dag import config, paths
from pipeline.images import prepared

OFFICIAL_BASE_URL = "https://www.cs.toronto.edu/~kriz/"
CIFAR = {
    "cifar10": {
        "archive": "cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
        "test": ["cifar-10-batches-py/test_batch"],
        "meta": "cifar-10-batches-py/batches.meta",
        "labels": {"labels": "label_names"},
        "classes": 10, "images": (50_000, 10_000),  # the official archive's (train, test)
    },
    "cifar100": {
        "archive": "cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "train": ["cifar-100-python/train"],
        "test": ["cifar-100-python/test"],
        "meta": "cifar-100-python/meta",
        "labels": {"fine_labels": "fine_label_names", "coarse_labels": "coarse_label_names"},
        "classes": 100, "images": (50_000, 10_000),
    },
}


class DataError(PipelineError):
    """A dataset could not be obtained or read; the message says what to do."""


# How patient a download is: seconds without a byte before a stalled server counts as failed,
# attempts per URL, and the first pause between attempts (doubled after each).
TIMEOUT = 30
ATTEMPTS = 4
BACKOFF = 1.0


class DownloadFailed(Exception):
    """One URL did not deliver; the message says how (for the list of what was tried)."""


def _download(url: str, part: Path) -> None:
    """Fetch `url` into `part`, continuing a partial file with an HTTP Range request.

    Retries dropped connections, stalls and 5xx answers with backoff; gives up at once on
    DNS failures and 4xx answers, which another attempt would not change.
    """
    for attempt in range(1, ATTEMPTS + 1):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                if "html" in response.headers.get("Content-Type", ""):
                    raise DownloadFailed("got an HTML page, not the archive (an error or login page?)")
                if have and response.status != 206:  # the server ignored Range: start over
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length else None
                with open(part, "ab" if have else "wb") as out, logs.progress(
                    total=total, initial=have, unit="B", unit_scale=True, desc=part.name, mininterval=1
                ) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        bar.update(len(chunk))
            if total is None or part.stat().st_size >= total:
                return
            problem = f"connection dropped at {part.stat().st_size:,} of {total:,} bytes"
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send: the partial file is whole
                return
            if exc.code < 500:
                raise DownloadFailed(f"HTTP {exc.code} {exc.reason}") from None
            problem = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, socket.gaierror):  # no DNS: offline, retrying will not help
                raise DownloadFailed(f"cannot resolve host ({exc.reason.strerror})") from None
            problem = str(exc.reason)
        except (http.client.HTTPException, OSError) as exc:  # dropped, reset or timed out mid-body
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if attempt < ATTEMPTS:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
    raise DownloadFailed(f"{problem} ({ATTEMPTS} attempts)")


def fetch_archive(dataset: str, download: dict) -> Path:
    """The verified archive for a CIFAR dataset: found in raw_dir, or downloaded there.

    A download goes to <name>.part and is moved into place only after its md5 matches;
    mirrors are tried in order, the official URL last.
    """
    spec = CIFAR[dataset]
    name = spec["archive"]
    expected = download["md5"].get(name, spec["md5"])
    target = Path(download["raw_dir"]) / name
    if target.exists():
        actual = atomic.digest(target, "md5")
        if actual != expected:
            raise DataError(
                f"{target} has md5 {actual}, expected {expected}. Delete it to download again, or if it is a "
                f"re-packed copy you trust, set download.md5.{name}: {actual} in params.yaml"
            )
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(name + ".part")
    failures = []
    for url in [m.rstrip("/") + "/" + name for m in download["mirrors"]] + [OFFICIAL_BASE_URL + name]:
        try:
            _download(url, part)
        except DownloadFailed as exc:
            failures.append(f"{url} ({exc})")
            continue
        actual = atomic.digest(part, "md5")
        if actual == expected:
            os.replace(part, target)
            return target
        part.unlink()
        failures.append(f"{url} (md5 {actual}, expected {expected})")
    raise DataError(
        f"could not download {name}: tried {'; '.join(failures)}. Offline? Download {name} "
        f"from {OFFICIAL_BASE_URL + name} and put it at {target}, or set download.mirrors in params.yaml"
    )


class _CifarUnpickler(pickle.Unpickler):
    """Only what the official CIFAR pickles need; anything else is refused, not executed.
    `_codecs.encode` only turns a str into bytes: a copy re-packed by Python 3 with pickle
    protocol 2 stores every bytes object through it."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    })

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
    except pickle.UnpicklingError as exc:
        if "refusing to load" in str(exc):  # readable, but it asks to run code: a re-pack, not a broken download
            raise DataError(f"{archive}: {member} {exc}; it is not an official CIFAR archive, whatever its md5: "
                            f"use the official one ({OFFICIAL_BASE_URL})") from None
        raise DataError(f"{archive}: cannot read {member} ({exc}); delete the archive and fetch it again") from None
    except (EOFError, ValueError) as exc:
        raise DataError(f"{archive}: cannot read {member} ({exc}); delete the archive and fetch it again") from None
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar(dataset: str, archive: Path) -> dict:
    """The official python-pickle archive, read in memory (nothing is extracted to disk)."""
    spec = CIFAR[dataset]
    try:
        # closed by the `with tar:` below; opened here so this except covers only the open
        tar = tarfile.open(archive, "r:gz")  # noqa: SIM115
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


def sizes(dataset: str) -> tuple[int, int, int]:
    """(classes, train images, test images) of a dataset, without downloading it."""
    if dataset == "digits":
        digits = read_digits()
        return len(digits["class_names"]), len(digits["train_labels"]), len(digits["test_labels"])
    return CIFAR[dataset]["classes"], *CIFAR[dataset]["images"]


def prepare(dataset: str, download: dict) -> dict:
    if dataset == "digits":
        return read_digits()
    return read_cifar(dataset, fetch_archive(dataset, download))


def main(params: dict, arch: str) -> None:
    started = time.perf_counter()
    if arch not in params["archs"]:
        raise DataError(f"{arch!r} is not in archs ({', '.join(params['archs'])})")
    dataset = config.profile_settings(params)["datasets"][arch]
    out = paths.layout(params).prepared(arch)
    arrays = prepare(dataset, params["download"])
    prepared.save(out, arrays)
    print(f"{dataset}: {len(arrays['train_labels'])} train / {len(arrays['test_labels'])} test images, "
          f"{len(arrays['class_names'])} classes -> {out}")
    # The stage's wall time goes to its log (logs/<profile>/data/<arch>.log), where provenance.py
    # reads it, not into the prepared file: that stays byte-identical from one run to the next.
    print(f"data: done in {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    stage.run("data", main, target="arch")
