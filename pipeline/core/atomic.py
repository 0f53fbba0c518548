"""Write files whole or not at all: a temp file beside the target, renamed over it on success."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)
# Fault injection for the tests: "<substring>" or "<substring>:group". A write whose final path
# contains the substring SIGKILLs this process (or its whole process group, as a power loss
# would) after the temp file is written and before it is renamed into place.
KILL_BEFORE_RENAME = "NA_REPRO_KILL_BEFORE_RENAME"


def _crash_here_if_asked(path: Path) -> None:
    target, _, scope = os.environ.get(KILL_BEFORE_RENAME, "").partition(":")
    if target and target in path.as_posix():
        os.killpg(0, signal.SIGKILL) if scope == "group" else os.kill(os.getpid(), signal.SIGKILL)


def _remove_stale(parent: Path, pattern: str) -> None:
    """Temp files and folders of an earlier write of the same target that was killed."""
    for stale in parent.glob(pattern):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path next to `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, f".{path.stem}.*.tmp{path.suffix}")
    # The temp name keeps the real extension last: some writers (papermill) check it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give outputs the usual mode
        _crash_here_if_asked(path)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path | str):
    """Yield a fresh temporary folder that replaces folder `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, f".{path.name}.*.tmp")
    _remove_stale(path.parent, f".{path.name}.*.old")
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        _crash_here_if_asked(path)
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def digest(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_csv(path, rows: list[dict]) -> None:
    """`rows` (dicts with the same keys) as a CSV file with a header, written whole or not at all."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
