"""params.yaml: loading, validation, profile resolution and the experiment matrix.

Snakemake, DVC, every stage and every tool go through `load()`, so a profile and its
overrides mean the same thing to all of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cache
from pathlib import Path

import jsonschema
import yaml

from pipeline import PipelineError

PARAMS_FILE = Path("params.yaml")
SCHEMA_FILE = Path(__file__).with_name("params.schema.json")
MATRIX = ("archs", "attentions", "seeds")  # which runs exist: what the notebooks and the report read
# Settings a profile may give per architecture ({alexnet: ..., resnet18: ...}); tests/test_config.py
# checks them against the schema.
PER_ARCH = ("datasets", "image_size", "train_runtime_min")
# The post's recipe is the paper profile. A run tests the post's claim when it shares these
# settings with it (with train_subset null: every training image).
POST_PROFILE = "paper"
POST_SETTING = ("datasets", "image_size", "epochs", "train_subset")

# When results are rebuilt. Each setting that can change a stage's outputs, with the stages it
# changes and why. Snakemake (rule params) and DVC (dvc.yaml params) both track exactly these,
# resolved for the active profile, so a stage reruns when one of its settings changes and for
# nothing else. The report shows every one of them, so it tracks them all.
RESULT_SETTINGS = {
    "datasets": (("data", "train", "evaluate"), "which images an architecture trains and is evaluated on"),
    "image_size": (("train", "evaluate"), "the network's input size"),
    "epochs": (("train",), "the recipe"),
    "batch_size": (("train",), "the recipe"),
    "lr": (("train",), "the recipe"),
    "weight_decay": (("train",), "the recipe"),
    "label_smoothing": (("train", "evaluate"), "the recipe; the validation loss uses it too"),
    "train_subset": (("train",), "which training images"),
    "val_subset": (("train", "evaluate"), "which validation images (training picks its best epoch on them)"),
    "device": (("train", "evaluate"), "another device runs other kernels"),
    "num_workers": (("train",), "loader workers draw the augmentation from their own random streams"),
    "amp": (("train",), "the precision training computes in"),
    "augment_on_device": (("train",), "another augmentation path, with its own random stream"),
    "devices_per_job": (("train",), "per-device BatchNorm statistics and per-worker augmentation seeds"),
    "log_every": (("train",), "which steps steps.csv records"),
    "eval_batch_size": (("train", "evaluate"), "the batches validation and the throughput figure run in"),
    "throughput_warmup": (("evaluate",), "the measured throughput"),
}
# Settings that change how a job runs, not what it computes; no stage reruns for them.
RUN_ONLY_SETTINGS = {
    "train_threads": "CPU threads per training job: the same results up to float rounding (sums add up "
                     "in another order), so a machine or cluster with other cores rebuilds nothing",
    "train_mem_mb": "the memory a training job asks a scheduler for",
    "train_runtime_min": "the time limit a training job asks a scheduler for",
    "prefetch_batches": "how far ahead loader workers prepare batches: the same batches",
    "pin_memory": "how batches reach the GPU: the same values",
}


class _Loader(yaml.SafeLoader):
    """YAML as DVC (YAML 1.2) reads it: 1e-4 is a number, not the string PyYAML makes of it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(PipelineError):
    """A bad params.yaml or override; the message is one line that says what to fix."""


@cache
def schema() -> dict:
    """The schema of params.yaml; every profile must set every setting (see params.yaml)."""
    loaded = json.loads(SCHEMA_FILE.read_text())
    settings = loaded["$defs"]["settings"]
    settings["required"] = list(settings["properties"])
    return loaded


def overridable() -> tuple[str, ...]:
    """Top-level keys that override the active profile's setting of the same name when not null:
    the schema's top-level keys that are settings."""
    return tuple(k for k in schema()["properties"] if k in schema()["$defs"]["settings"]["properties"])


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "params"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"unknown key {where}.{extra[0]}; allowed keys there: {', '.join(allowed)}".replace(
            "params.", "", 1
        )
    if error.validator == "enum":
        return f"{where} is {error.instance!r}; allowed values: {', '.join(map(str, error.validator_value))}"
    if error.validator in ("anyOf", "oneOf"):
        # Report the most specific branch rather than "is not valid under any of the given schemas".
        # (a null branch only means "not overridden", so its complaint is never the useful one).
        inner = [e for e in error.context if e.schema != {"type": "null"}] or list(error.context)
        return _describe(jsonschema.exceptions.best_match(inner))
    return f"{where}: {error.message}"


def validate(params: dict, source: str = str(PARAMS_FILE)) -> dict:
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(params))
    if error is not None:
        raise ConfigError(f"{source}: {_describe(error)}")
    return params


def parse_override(text: str) -> tuple[str, object]:
    """`key=value` with a YAML value, as `snakemake --config` and `dvc exp run -S` take them."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. epochs=1)")
    return key.strip(), read_yaml(value)


def load(overrides: list[str] | None = None, path: Path = PARAMS_FILE) -> dict:
    """params.yaml with `key=value` overrides applied, validated."""
    if not Path(path).exists():
        raise ConfigError(f"{path} not found; run from the project folder (the one holding params.yaml)")
    params = read_yaml(Path(path).read_text()) or {}
    for key, value in map(parse_override, overrides or []):
        params[key] = value
    return validate(params, source=f"{path}" + (" with overrides" if overrides else ""))


def _typed(value):
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return read_yaml(value) if isinstance(value, str) else value


def typed_snakemake_config(config: dict, path: Path = PARAMS_FILE) -> dict:
    """Snakemake's config with --config values typed as params.yaml would type them.

    Snakemake reads nested --config values with YAML's BaseLoader, so `seeds=[42,43]` arrives
    as ['42', '43']; values equal to the file's are left alone.
    """
    on_disk = read_yaml(Path(path).read_text())
    return {key: value if on_disk.get(key) == value else _typed(value) for key, value in config.items()}


def overrides(params: dict, path: Path = PARAMS_FILE) -> dict:
    """The top-level values by which `params` (Snakemake's config, or a stage's params after
    --set) differ from params.yaml on disk."""
    on_disk = read_yaml(Path(path).read_text())
    return {key: value for key, value in params.items() if on_disk.get(key) != value}


def cli_overrides(params: dict, path: Path = PARAMS_FILE) -> list[str]:
    """The same differences as `key=value` pairs.

    Snakemake passes them to every command as `--set key=value`, so `--config epochs=1`
    reaches the stages exactly as `dvc exp run -S epochs=1` does through the file.
    """
    return [f"{key}={_flow(value)}" for key, value in overrides(params, path).items()]


def configuration(params: dict, path: Path = PARAMS_FILE) -> str:
    """The name of the folders this configuration's results live in: the profile, plus a short key
    of any overrides (`snakemake --config ...`, `--set ...`, the profile included), e.g. `paper-3f9c2a1b`.

    What params.yaml itself says is the profile's own configuration, whichever engine runs it;
    DVC records that one. `dvc exp run -S` edits the file and keeps its experiments apart in DVC's
    own way, so an override, which DVC never records, must not write where DVC's results are."""
    changed = overrides(params, path)
    if not changed:
        return params["profile"]
    key = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
    return f"{params['profile']}-{key}"


def tracked_params(stage: str, profile: str, arch: str | None = None, notebook: str | None = None) -> list[str]:
    """The params.yaml keys (dotted) that can change `stage`'s outputs under `profile`, for one
    architecture's job when `arch` is given, or one notebook's. dvc.yaml lists them (with ${...}
    templates) and the Snakefile tracks their values, from this one function."""
    keys = []
    for setting, (stages, _) in RESULT_SETTINGS.items():
        if stage in stages or stage == "report":
            keys.append(f"profiles.{profile}.{setting}" + (f".{arch}" if arch and setting in PER_ARCH else ""))
            keys += [setting] if setting in overridable() else []
    if stage == "notebook":
        from pipeline.dag import paths

        declared = paths.notebook_parameters(notebook)
        return [*MATRIX] + ([f"profiles.{POST_PROFILE}.{key}" for key in POST_SETTING]
                            if "post_setting" in declared else [])
    return keys + {"data": ["download.md5"], "report": list(MATRIX)}.get(stage, [])


def post_setting(params: dict) -> dict[str, dict]:
    """arch -> what a run must share with the post's recipe (profiles.paper) for the post's claim
    to be tested on it: {dataset, image_size, epochs, train_subset}."""
    paper = params["profiles"][POST_PROFILE]
    return {arch: {"dataset" if key == "datasets" else key:
                   paper[key][arch] if key in PER_ARCH and isinstance(paper[key], dict) else paper[key]
                   for key in POST_SETTING}
            for arch in paper["datasets"]}


def lookup(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def tracked_values(params: dict, stage: str, arch: str | None = None, notebook: str | None = None) -> dict:
    """What Snakemake compares with its record of a job's last run (the job's `params`)."""
    return {key: lookup(params, key) for key in tracked_params(stage, params["profile"], arch, notebook)}


def _flow(value) -> str:
    """`value` as one line that `read_yaml` reads back: compact JSON, but with YAML's .inf / .nan
    (JSON's Infinity would come back as a string)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, list):
        return "[" + ",".join(map(_flow, value)) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_flow(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def profile_settings(params: dict, name: str | None = None) -> dict:
    """The active profile (or `name`) with the top-level overrides applied."""
    settings = {**params["profiles"][name or params["profile"]]}
    settings.update({k: params[k] for k in overridable() if params.get(k) is not None})
    batch, devices = settings["batch_size"], settings["devices_per_job"]
    if batch % devices:
        # batch_size is the global batch: each device takes batch_size / devices_per_job of it.
        fix = batch + devices - batch % devices
        raise ConfigError(
            f"batch_size {batch} does not split over devices_per_job {devices} (each device takes "
            f"batch_size / devices_per_job images of every batch); set batch_size to a multiple of {devices}, "
            f"e.g. --config batch_size={fix} (Snakemake) or -S batch_size={fix} (DVC), or change devices_per_job"
        )
    return settings


def experiments(params: dict) -> list[str]:
    """"<arch>-<attention>" for every pair of the matrix."""
    return [f"{arch}-{attention}" for arch in params["archs"] for attention in params["attentions"]]


def split_experiment(experiment: str) -> tuple[str, str]:
    """"resnet18-na-blog" -> ("resnet18", "na-blog")."""
    arch, _, attention = experiment.partition("-")
    return arch, attention


def run_name(experiment: str, seed: int) -> str:
    return f"{experiment}-s{seed}"


def parse_run(run: str) -> tuple[str, int]:
    experiment, sep, seed = run.rpartition("-s")
    if not sep or not seed.isdigit():
        raise ConfigError(f"run {run!r} is not of the form <arch>-<attention>-s<seed>")
    return experiment, int(seed)


def runs(params: dict) -> list[str]:
    """Every training job of the experiment matrix, in a stable order."""
    return [run_name(e, s) for e in experiments(params) for s in params["seeds"]]


def run_settings(params: dict, run: str) -> dict:
    """Everything one training/evaluation job needs, with per-architecture values resolved."""
    experiment, seed = parse_run(run)
    if experiment not in experiments(params) or seed not in params["seeds"]:
        raise ConfigError(f"run {run!r} is not in the experiment matrix: {', '.join(runs(params))}")
    arch, attention = split_experiment(experiment)
    return {**arch_settings(params, arch), "run": run, "experiment": experiment, "attention": attention, "seed": seed}


def arch_settings(params: dict, arch: str) -> dict:
    """The active profile's settings for one architecture, per-architecture values resolved."""
    settings = profile_settings(params)
    per_arch = {key: settings[key][arch] for key in PER_ARCH if isinstance(settings[key], dict)}
    return {**settings, **per_arch, "datasets": settings["datasets"], "arch": arch, "dataset": per_arch["datasets"]}

