# Set-up shared by the rules: the checked config, this configuration's paths and the commands'
# --set options. Paths, the code each stage depends on and the settings it tracks all come from
# pipeline/dag/ (paths.py, deps.py, config.py), the same place dvc.yaml is generated from.

import os
import shlex
import sys

from pipeline.core import logs
from pipeline.dag import config as cfg
from pipeline.dag import deps, paths, pull
from pipeline.hardware import device, paddle_setup

config.update(cfg.typed_snakemake_config(config))
try:
    cfg.validate(config, source="params.yaml with --config")
    SETTINGS = cfg.profile_settings(config)
except cfg.ConfigError as exc:
    sys.exit(f"error: {exc}")

# Jobs side by side (more cores than one training takes) keep their progress bars in their logs.
os.environ[logs.SIDE_BY_SIDE] = str(int((workflow.resource_settings.cores or 1) > paddle_setup.training_cpus(SETTINGS)))
LAYOUT = paths.layout(config)  # this configuration's folders: results of others stay untouched
RUNS = cfg.runs(config)
# --config values that differ from params.yaml reach every command as --set key=value. The data
# stage's output is shared by all configurations of a profile, so it gets only what can change it.
OVERRIDES = cfg.cli_overrides(config)
# GPUs an evaluation holds; a training job holds devices_per_job of them (rules/train.smk).
GPUS_PER_JOB = device.gpus_per_job(SETTINGS, devices=1)
# Every rule's environment under --sdm conda: the GPU build of Paddle when the profile trains on GPUs.
CONDA_ENV = f"../envs/{'na-repro-gpu' if GPUS_PER_JOB else 'na-repro'}.yaml"


def set_options(overrides):
    """--set options for a shell command, braces escaped from Snakemake's formatting."""
    return "".join(f" --set {shlex.quote(o)}" for o in overrides).replace("{", "{{").replace("}", "}}")


SET = set_options(OVERRIDES)
DATA_SET = set_options(o for o in OVERRIDES if o.split("=")[0] in ("profile", "download"))


def evaluation_threads(wildcards):
    """On a GPU one CPU feeds the predictor, so trainings keep the others. On the CPU every core
    Snakemake may use; a cluster job (submitted, or running in its allocation, where --cores is
    the node's) asks for a training job's share, the same in both places."""
    if GPUS_PER_JOB:
        return 1
    local = workflow.local_exec and not workflow.remote_exec  # known once jobs are planned
    return workflow.resource_settings.cores if local else SETTINGS["train_threads"]


def run_arch(wildcards):
    return cfg.run_settings(config, wildcards.run)["arch"]


wildcard_constraints:
    run="|".join(RUNS),
    arch="|".join(config["archs"]),


def in_snakemake_report(path):
    """A notebook's figure or the comparison table, flagged for `snakemake --report`; else the path."""
    if path.suffix == ".png":
        return report(path, caption="captions/figure.rst", category="Figures", labels={"figure": path.stem})
    if path == LAYOUT.comparison_table:
        return report(path, caption="captions/comparison.rst", category="Tables", labels={"table": path.stem})
    return path
