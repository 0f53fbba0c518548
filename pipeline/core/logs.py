"""Copy a command's stdout and stderr into its log file while still showing them on the terminal;
keep live progress bars of jobs that run side by side out of the terminal; hide native output that
says nothing."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

# Set by the Snakefile when it may run several jobs at once: their bars would overwrite one another
# on the one terminal line, so each job's bar goes to its log and the terminal keeps the job lines
# and what the jobs print (a training job: one line per finished epoch).
SIDE_BY_SIDE = "NA_REPRO_JOBS_SIDE_BY_SIDE"
_log = None  # the running command's log file, while `tee` holds it


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
        global _log
        _log = log
        try:
            yield
        finally:
            _log = None


def progress(iterable=None, **options) -> tqdm:
    """A tqdm bar: on the terminal (and in the log) when this job has the terminal to itself, else
    in the job's log only."""
    if os.environ.get(SIDE_BY_SIDE) == "1" and _log is not None:
        options = {**options, "file": _log, "ncols": 100, "mininterval": 10}
    return tqdm(iterable, **options)


@contextlib.contextmanager
def native_output_hidden():
    """Hide what Paddle's C++ side (or a compiler it runs) writes to file descriptors 1 and 2, which
    redirect_stdout cannot, unless the block fails. Exporting a model logs a glog warning for any
    tensor `+` ("PIR not support input out tensor"), the predictor's first run prints
    "ReduceMeanCheckIfOneDNNSupport" for every mean op, and building a kernel prints Paddle's banner."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile("w+") as log:
        for fd in saved:
            os.dup2(log.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved[2], 2)
            log.seek(0)
            sys.stderr.write(log.read())
            raise
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
