"""The data stage against real archives in the official format, served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pipeline import data
from tests.conftest import assert_nothing_lost
from tests.helpers import cifar_archives


def download_settings(tmp_path, mirrors=(), md5=None) -> dict:
    return {"raw_dir": str(tmp_path / "raw"), "mirrors": list(mirrors), "md5": md5 or {}}


@pytest.fixture
def no_internet(monkeypatch):
    """Make the official URL unreachable even on a networked machine: a proxy that refuses.
    Downloads are made impatient so that failing ones fail fast."""
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setattr(data, "BACKOFF", 0.0)
    monkeypatch.setattr(data, "TIMEOUT", 0.5)


def test_reads_official_cifar10_format(tmp_path):
    archive = cifar_archives.cifar10(tmp_path / "cifar-10-python.tar.gz", per_batch=7)
    arrays = data.read_cifar("cifar10", archive)
    assert arrays["train_images"].shape == (35, 32, 32, 3) and arrays["train_images"].dtype == np.uint8
    assert arrays["test_images"].shape == (7, 32, 32, 3)
    assert list(arrays["class_names"][:2]) == ["airplane", "automobile"]
    # Pixel layout: the official rows are 1024 red, 1024 green, 1024 blue values, row-major.
    with tarfile.open(archive) as tar:
        raw = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
    first = raw[b"data"][0]
    assert arrays["train_images"][0, 0, 1, 0] == first[1]
    assert arrays["train_images"][0, 2, 0, 2] == first[2048 + 64]
    assert list(arrays["train_labels"][:7]) == raw[b"labels"]


def test_reads_cifar100_fine_and_coarse_labels(tmp_path):
    archive = cifar_archives.cifar100(tmp_path / "cifar-100-python.tar.gz", train=9, test=4)
    arrays = data.read_cifar("cifar100", archive)
    assert arrays["train_images"].shape == (9, 32, 32, 3)
    assert len(arrays["class_names"]) == 100 and len(arrays["coarse_class_names"]) == 20
    assert arrays["test_coarse_labels"].shape == (4,) and arrays["train_labels"].max() < 100


def test_digits_split_is_deterministic_and_stratified():
    a, b = data.read_digits(), data.read_digits()
    assert np.array_equal(a["test_images"], b["test_images"])
    assert a["train_images"].shape[1:] == (32, 32, 3) and a["train_images"].dtype == np.uint8
    assert len(a["train_labels"]) + len(a["test_labels"]) == 1797
    counts = np.bincount(a["test_labels"], minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32  # about a sixth of each class
    assert len(set(a["test_labels"][:18])) > 3  # the prediction grid shows a mix of classes


def test_downloads_from_mirror_and_verifies_md5(tmp_path, http_server, no_internet, capfd):
    base, served = http_server
    archive = cifar_archives.cifar10(served / "cifar-10-python.tar.gz")
    settings = download_settings(tmp_path, mirrors=[base], md5={archive.name: cifar_archives.md5(archive)})
    path = data.fetch_archive("cifar10", settings)
    assert path.read_bytes() == archive.read_bytes()
    assert "cifar-10-python.tar.gz" in capfd.readouterr().err  # the progress bar names the file
    assert not list(path.parent.glob(".*.tmp*"))  # no partial download left behind


def test_uses_archive_already_in_raw_dir(tmp_path, no_internet):
    settings = download_settings(tmp_path)
    archive = cifar_archives.cifar100(tmp_path / "raw" / "cifar-100-python.tar.gz")
    settings["md5"] = {archive.name: cifar_archives.md5(archive)}
    assert data.fetch_archive("cifar100", settings) == archive


@pytest.mark.faults
def test_refuses_archive_with_wrong_checksum(tmp_path, no_internet):
    archive = cifar_archives.cifar10(tmp_path / "raw" / "cifar-10-python.tar.gz")
    with pytest.raises(data.DataError) as err:
        data.fetch_archive("cifar10", download_settings(tmp_path))
    message = str(err.value)
    assert "c58f30108f718f92721af3b95e74349a" in message and cifar_archives.md5(archive) in message
    assert "download.md5" in message and "\n" not in message


@pytest.mark.faults
def test_offline_without_archive_names_url_file_and_place(tmp_path, http_server, no_internet):
    base, _ = http_server  # serves nothing: the mirror answers 404
    with pytest.raises(data.DataError) as err:
        data.fetch_archive("cifar100", download_settings(tmp_path, mirrors=[base]))
    message = str(err.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in message
    assert str(tmp_path / "raw" / "cifar-100-python.tar.gz") in message
    assert "404" in message
    assert_nothing_lost(tmp_path / "raw" / "cifar-100-python.tar.gz")


@pytest.mark.faults
def test_restricted_unpickler_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = pickle.dumps({b"label_names": Exploit()})
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(data.DataError, match=r"refusing to load io\.open") as err:
        data.read_cifar("cifar10", archive)
    assert not (tmp_path / "pwned").exists()
    assert "not an official CIFAR archive, whatever its md5" in str(err.value)
    assert "fetch it again" not in str(err.value)  # downloading the same file again would not help


def test_an_archive_repacked_with_pickle_protocol_2_reads_as_the_original(tmp_path):
    original = data.read_cifar("cifar10", cifar_archives.cifar10(tmp_path / "a" / "cifar-10-python.tar.gz"))
    repacked = data.read_cifar("cifar10", cifar_archives.cifar10(tmp_path / "b" / "cifar-10-python.tar.gz",
                                                                 protocol=2))
    assert original.keys() == repacked.keys()
    assert all(np.array_equal(original[k], repacked[k]) for k in original)


def test_data_stage_writes_prepared_arrays(project, http_server, no_internet):
    from tests.conftest import run

    base, served = http_server
    a10 = cifar_archives.cifar10(served / "cifar-10-python.tar.gz")
    a100 = cifar_archives.cifar100(served / "cifar-100-python.tar.gz")
    md5 = f"{{{a10.name}: {cifar_archives.md5(a10)}, {a100.name}: {cifar_archives.md5(a100)}}}"
    for arch in ("alexnet", "resnet18"):
        run(["python", "-m", "pipeline.data", arch, "--set", "profile=paper",
             "--set", f"download={{raw_dir: data/raw, mirrors: [{base}], md5: {md5}}}"], cwd=project)
    with np.load(project / "data/prepared/paper/resnet18.npz") as npz:  # CIFAR-100
        assert npz["train_images"].shape == (60, 32, 32, 3) and len(npz["class_names"]) == 100
    with np.load(project / "data/prepared/paper/alexnet.npz") as npz:  # CIFAR-10
        assert len(npz["class_names"]) == 10


@pytest.fixture
def served_cifar10(tmp_path, archive_server):
    archive = cifar_archives.cifar10(tmp_path / "build" / "cifar-10-python.tar.gz")
    archive_server.files[archive.name] = archive.read_bytes()
    settings = download_settings(tmp_path, mirrors=[archive_server.url],
                                 md5={archive.name: cifar_archives.md5(archive)})
    return archive, settings


@pytest.mark.faults
@pytest.mark.parametrize("faults", [["drop"], ["drop", "drop"], ["500"], ["500", "stall"]])
def test_download_recovers_from_a_misbehaving_server(served_cifar10, archive_server, no_internet, faults):
    archive, settings = served_cifar10
    archive_server.faults[archive.name] = list(faults)
    path = data.fetch_archive("cifar10", settings)
    assert path.read_bytes() == archive.read_bytes()
    assert not path.with_name(path.name + ".part").exists()
    if "drop" in faults:  # the second request continued where the first stopped
        assert archive_server.requests[1][1] == f"bytes={len(archive.read_bytes()) // 2}-"


@pytest.mark.faults
@pytest.mark.parametrize("fault, message", [
    ("html", "got an HTML page"),
    ("404", "HTTP 404"),
    ("wrong", "md5 "),
])
def test_download_failures_are_one_clear_line(served_cifar10, archive_server, no_internet, fault, message):
    archive, settings = served_cifar10
    archive_server.faults[archive.name] = [fault] * 10
    with pytest.raises(data.DataError) as err:
        data.fetch_archive("cifar10", settings)
    text = str(err.value)
    assert message in text and "cifar-10-python.tar.gz" in text and "\n" not in text
    raw = Path(settings["raw_dir"])
    assert_nothing_lost(raw / archive.name, raw / (archive.name + ".part"))


@pytest.mark.faults
def test_wrong_bytes_from_a_mirror_fall_through_to_the_next(served_cifar10, archive_server, no_internet):
    archive, settings = served_cifar10
    archive_server.faults[archive.name] = ["wrong"]
    settings["mirrors"] = [archive_server.url, archive_server.url + "/"]
    assert data.fetch_archive("cifar10", settings).read_bytes() == archive.read_bytes()


@pytest.mark.faults
def test_a_server_that_keeps_dropping_is_given_up(served_cifar10, archive_server, no_internet):
    archive, settings = served_cifar10
    archive_server.faults[archive.name] = ["drop"] * data.ATTEMPTS * 2
    with pytest.raises(data.DataError, match=r"connection dropped .* \(4 attempts\)"):
        data.fetch_archive("cifar10", settings)


@pytest.mark.faults
def test_traversal_archive_writes_nothing_outside(tmp_path):
    """Members are read in memory by name; a crafted member path is never written anywhere."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("../escaped.txt", "/tmp/absolute-escape.txt", "cifar-10-batches-py/batches.meta"):
            payload = pickle.dumps({b"label_names": []}) if name.endswith("meta") else b"gotcha"
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(data.DataError, match="not an official CIFAR python archive"):
        data.read_cifar("cifar10", archive)
    assert not (tmp_path.parent / "escaped.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()


@pytest.mark.faults
def test_truncated_archive_is_a_clear_error(tmp_path, no_internet):
    archive = cifar_archives.cifar10(tmp_path / "raw" / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[:-200])
    settings = download_settings(tmp_path, md5={archive.name: cifar_archives.md5(archive)})
    with pytest.raises(data.DataError, match=r"delete it and fetch it again|delete the archive and fetch it again"):
        data.read_cifar("cifar10", data.fetch_archive("cifar10", settings))
