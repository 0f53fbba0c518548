"""`python -m pipeline <stage> ...`: the commands that Snakemake and DVC both run."""

from __future__ import annotations

import argparse
import sys

from pipeline import device


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key for this command, e.g. --set epochs=1")
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)
    sub.add_parser("data", parents=[common], help="fetch and prepare the datasets of the active profile")
    for name in ("train", "evaluate"):
        sub.add_parser(name, parents=[common], help=f"{name} one run, e.g. alexnet-na-blog-s42").add_argument("run")
    sub.add_parser("notebook", parents=[common], help="execute one notebook with papermill").add_argument("name")
    sub.add_parser("report", parents=[common], help="assemble reports/index.html")
    p = sub.add_parser("params", parents=[common], help="print the parameter counts of the experiment matrix")
    p.add_argument("--profile", help="profile to count for (default: the active one)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.stage in ("train", "evaluate", "params"):
        device.import_paddle()  # fixes the thread count first

    from pipeline import PipelineError, config

    try:
        overrides = args.set + ([f"profile={args.profile}"] if getattr(args, "profile", None) else [])
        params = config.load(overrides)
        if args.stage == "data":
            from pipeline import data

            data.main(params)
        elif args.stage == "train":
            from pipeline import train

            train.main(params, args.run)
        elif args.stage == "evaluate":
            from pipeline import evaluate

            evaluate.main(params, args.run)
        elif args.stage == "notebook":
            from pipeline import notebook

            notebook.main(params, args.name)
        elif args.stage == "report":
            from pipeline import report

            report.main(params)
        elif args.stage == "params":
            from pipeline import summary

            summary.main(params)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
