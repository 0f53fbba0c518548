"""`python -m pipeline <tool> ...`: the commands about the project rather than one stage.

The stages are commands of their own, `python -m pipeline.<stage>` (pipeline/core/stage.py), which
Snakemake and DVC run; no stage imports this file or a tool, so editing either reruns nothing.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# tool -> (module, help)
TOOLS = {
    "params": ("pipeline.tools.params", "print the parameter counts and FLOPs of the configurations"),
    "bench": ("pipeline.tools.bench", "measure data, training, inference, thread and pipeline speed"),
    "doctor": ("pipeline.tools.doctor", "check this machine the way the active profile will use it, before a long run"),
    "pull": ("pipeline.dag.pull", "dvc pull, check that DVC is clean, and record the pulled results for Snakemake"),
    "dvc-yaml": ("pipeline.dag.dvc_yaml", "write dvc.yaml from the stage code, paths and settings in pipeline/"),
}
LOGGED = {"params", "bench", "doctor"}  # about a configuration: a log beside its stages' logs
NEEDS_PADDLE = {"params", "bench", "doctor"}


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key for this command, e.g. --set epochs=1")
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="tool", required=True)
    for tool, (_, text) in TOOLS.items():
        sub.add_parser(tool, parents=[common], help=text)
    sub.choices["params"].add_argument("--profile", help="profile to count for (default: the active one)")
    bench = sub.choices["bench"]
    bench.add_argument("--repeats", type=int, default=5, help="timings per case; medians are reported (default 5)")
    bench.add_argument("--batch", type=int, default=64, help="training batch size (default 64)")
    bench.add_argument("--quick", action="store_true", help="one repeat at tiny sizes: checks that it all runs")
    # what `doctor` starts as each worker of its data-parallel check
    sub.choices["doctor"].add_argument("--data-parallel-worker", action="store_true", help=argparse.SUPPRESS)
    sub.choices["dvc-yaml"].add_argument("--check", action="store_true", help="only check that dvc.yaml is current")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from pipeline import PipelineError
    from pipeline.core import stage
    from pipeline.dag import config, paths
    from pipeline.hardware import device, paddle_setup

    overrides = args.set + ([f"profile={args.profile}"] if getattr(args, "profile", None) else [])
    options = {k: v for k, v in vars(args).items() if k not in ("tool", "set", "profile")}
    try:
        params = config.load(overrides)
        if args.tool in NEEDS_PADDLE:
            paddle_setup.check_paddle_build()
            paddle_setup.import_paddle()  # fixes the thread count first
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # A data-parallel worker's output goes to its launcher's log folder.
    logged = args.tool in LOGGED and not device.launched_worker()
    module = importlib.import_module(TOOLS[args.tool][0])
    return stage.execute(lambda: module.main(params, **options),
                         paths.layout(params).log(args.tool) if logged else None)


if __name__ == "__main__":
    sys.exit(main())
