"""Copy a command's stdout and stderr into its log file while still showing them on the terminal."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path


class _Tee:
    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding... come from the terminal stream
        return getattr(self.stream, name)


@contextlib.contextmanager
def tee(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(path, "w", buffering=1) as log,
        contextlib.redirect_stdout(_Tee(sys.stdout, log)),
        contextlib.redirect_stderr(_Tee(sys.stderr, log)),
    ):
        yield
