"""`python -m pipeline <stage> ...`: the commands that Snakemake and DVC both run.

Each stage is one module with a `main(params, *target)` entry point. Output is shown on the
terminal and copied to logs/<configuration>/<stage>/<target>.log. Errors the user can fix print one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import traceback

from pipeline import device

# stage -> (module, name of its target argument or None, help)
STAGES = {
    "data": ("data", "arch", "fetch and prepare the dataset one architecture trains on, e.g. alexnet"),
    "train": ("train", "run", "train one run of the experiment matrix, e.g. alexnet-na-blog-s42"),
    "evaluate": ("evaluate", "run", "evaluate one run's best checkpoint"),
    "notebook": ("notebook", "name", "execute one notebook with papermill, e.g. comparison"),
    "report": ("report", None, "assemble reports/index.html"),
    "params": ("summary", None, "print the parameter counts of the configurations"),
    "bench": ("bench", None, "measure data, training, inference, thread and pipeline speed"),
    "doctor": ("doctor", None, "check this machine the way the active profile will use it, before a long run"),
    "pull": ("sync", None, "dvc pull, check that DVC is clean, and record the pulled results for Snakemake"),
    "dvc-yaml": ("dvc_yaml", None, "write dvc.yaml from the stage code, paths and settings in pipeline/"),
}
# Commands about the project rather than a configuration keep no log.
UNLOGGED = {"dvc-yaml", "pull"}
NEEDS_PADDLE = {"train", "evaluate", "params", "bench", "doctor"}


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key for this command, e.g. --set epochs=1")
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage, (_, target, text) in STAGES.items():
        p = sub.add_parser(stage, parents=[common], help=text)
        if target:
            p.add_argument(target)
    sub.choices["params"].add_argument("--profile", help="profile to count for (default: the active one)")
    bench = sub.choices["bench"]
    bench.add_argument("--repeats", type=int, default=5, help="timings per case; medians are reported (default 5)")
    bench.add_argument("--batch", type=int, default=64, help="training batch size (default 64)")
    bench.add_argument("--quick", action="store_true", help="one repeat at tiny sizes: checks that it all runs")
    # what `doctor` starts as each worker of its data-parallel check
    sub.choices["doctor"].add_argument("--data-parallel-worker", action="store_true", help=argparse.SUPPRESS)
    sub.choices["dvc-yaml"].add_argument("--check", action="store_true", help="only check that dvc.yaml is current")
    return parser.parse_args(argv)


def claim_gpus(stage: str, settings: dict) -> None:
    """A job on GPUs takes device ids no other job holds, before Paddle sees any (gpu_locks.py);
    a data-parallel training takes all of its workers' (they inherit them)."""
    from pipeline import gpu_locks

    # With the CPU build installed, the stage itself says which build to install.
    if device.wants_gpu(settings["device"]) and device.GPU_BUILD in device.paddle_builds():
        gpu_locks.claim(settings["devices_per_job"] if stage == "train" else 1)


class Terminated(BaseException):
    """SIGTERM, as SLURM sends it at a time limit, on scancel or preemption (and SIGKILL a little
    later): raised in the stage, so every write in progress drops its temp file (no final name is
    ever half-written: they are renamed into place whole), and the log says why it stopped."""


def stop_on_sigterm(signum, frame):
    raise Terminated("stopped by SIGTERM (a time limit, scancel or preemption); "
                     "rerun the job: a training resumes after its last complete epoch")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pipeline import PipelineError, config, logs, paths

    module, target_name, _ = STAGES[args.stage]
    targets = [getattr(args, target_name)] if target_name else []
    overrides = args.set + ([f"profile={args.profile}"] if getattr(args, "profile", None) else [])
    options = {k: v for k, v in vars(args).items() if k not in ("stage", "set", "profile", target_name)}
    try:
        device.check_paddle_build()
        params = config.load(overrides)
        if args.stage in ("train", "evaluate") and not device.launched_worker():
            settings = config.run_settings(params, *targets)
            claim_gpus(args.stage, settings)
            if args.stage == "train":  # each process's Paddle threads, beside its loader workers
                allotted = int(os.environ.get("OMP_NUM_THREADS") or device.available_cores())
                os.environ["OMP_NUM_THREADS"] = str(device.training_threads(
                    allotted, settings["devices_per_job"], settings["num_workers"]))
        if args.stage in NEEDS_PADDLE:
            device.import_paddle()  # fixes the thread count first
        signal.signal(signal.SIGTERM, stop_on_sigterm)  # after paddle, which sets its own (a C++ dump)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # A data-parallel worker's output goes to its launcher's log folder (and rank 0's, through
    # the launching command, to this stage's log), so it leaves the stage's log file alone.
    quiet = device.launched_worker() or args.stage in UNLOGGED
    log = contextlib.nullcontext() if quiet else logs.tee(paths.layout(params).log(args.stage, *targets))
    with log:
        try:
            importlib.import_module(f"pipeline.{module}").main(params, *targets, **options)
        except (PipelineError, Terminated) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Exception:  # a bug, not bad input: keep the traceback, in the log too
            traceback.print_exc()
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
