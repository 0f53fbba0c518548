# na-repro: data -> four trainings -> evaluation -> notebooks -> reports/index.html.
# The stages are `python -m pipeline ...` commands; dvc.yaml runs the same ones.
#   snakemake --cores 4 all                         # the active profile of params.yaml
#   snakemake --cores 4 all --config profile=paper  # any params.yaml key, for this run only

import shlex
import sys

from pipeline import config as cfg
from pipeline import device, paths
from snakemake.utils import validate


configfile: "params.yaml"


config.update(cfg.typed_snakemake_config(config))
try:
    cfg.validate(config, source="params.yaml with --config")
    SETTINGS = cfg.profile_settings(config)
except cfg.ConfigError as exc:
    sys.exit(f"error: {exc}")
validate(config, str(cfg.SCHEMA_FILE))

RUNS = cfg.runs(config)
# --config values that differ from params.yaml reach every command as --set key=value.
OVERRIDES = cfg.cli_overrides(config)
SET = "".join(f" --set {shlex.quote(o)}" for o in OVERRIDES)
# GPUs an evaluation holds; a training job holds devices_per_job of them (rules/train.smk).
GPUS_PER_JOB = device.gpus_per_job(SETTINGS, devices=1)


wildcard_constraints:
    run="|".join(RUNS),


rule all:
    input:
        paths.REPORT,


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/report.smk"


onsuccess:
    # Record the outputs in DVC so `dvc status` is clean and `dvc repro` has nothing to do.
    # Not with --config overrides: params.yaml would not describe what was built.
    if OVERRIDES:
        print(f"Not recorded in DVC: built with --config {' '.join(OVERRIDES)}, which params.yaml does not say.")
    else:
        shell("dvc commit --force --quiet")
