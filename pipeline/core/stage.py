"""What every stage command does around its work.

A stage is one module with a `main(params, *target)` entry point, run as
`python -m pipeline.<stage> [target] [--set key=value ...]`, e.g. `python -m pipeline.train
alexnet-na-blog-s42`; Snakemake and DVC run exactly these commands. Its output is shown on the
terminal and copied to logs/<configuration>/<stage>/<target>.log. Errors the user can fix print one
line; a bug keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
from functools import cache

from pipeline import PipelineError
from pipeline.core import logs
from pipeline.dag import config, paths


class Terminated(BaseException):
    """SIGTERM, as SLURM sends it at a time limit, on scancel or preemption (and SIGKILL a little
    later): raised in the stage, so every write in progress drops its temp file (no final name is
    ever half-written: they are renamed into place whole), and the log says why it stopped."""


def stop_on_sigterm(signum, frame):
    raise Terminated("stopped by SIGTERM (a time limit, scancel or preemption); "
                     "rerun the job: a training resumes after its last complete epoch")


@cache
def command_line(target: str | None) -> argparse.Namespace:
    """This command's target (`args.target`, or None) and its --set overrides (`args.set`)."""
    main = sys.modules["__main__"]
    parser = argparse.ArgumentParser(prog=f"python -m {main.__spec__.name}" if main.__spec__ else None,
                                     description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if target:
        parser.add_argument("target", metavar=target)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key for this command, e.g. --set epochs=1")
    args = parser.parse_args()
    args.target = getattr(args, "target", None)
    return args


def load_params(target: str | None) -> dict:
    return config.load(command_line(target).set)


def fail(exc: BaseException) -> None:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)


def execute(work, log_path=None) -> int:
    """`work()` with its output copied to `log_path` (unless None); the exit code."""
    with logs.tee(log_path) if log_path else contextlib.nullcontext():
        try:
            work()
        except (PipelineError, Terminated) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Exception:  # a bug, not bad input: keep the traceback, in the log too
            traceback.print_exc()
            return 2
    return 0


def run(name: str, main, target: str | None = None, log: bool = True) -> None:
    """Run stage `name`'s `main(params[, target])` as this process's command, and exit with its code.
    `target` names the command's one argument (run, arch, notebook); `log=False` leaves the
    stage's log file alone (a data-parallel worker: its launcher's log gets its output)."""
    args = command_line(target)
    targets = [args.target] if target else []
    try:
        params = load_params(target)
    except PipelineError as exc:
        fail(exc)
    signal.signal(signal.SIGTERM, stop_on_sigterm)  # after any paddle import: paddle sets its own (a C++ dump)
    log_path = paths.layout(params).log(name, *targets) if log else None
    sys.exit(execute(lambda: main(params, *targets), log_path))
