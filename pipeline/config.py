"""params.yaml: loading, validation, profile resolution and the experiment matrix.

Snakemake, DVC and every `python -m pipeline` stage go through `load()`, so a profile and its
overrides mean the same thing to all of them.
"""

from __future__ import annotations

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
# Top-level keys that override the active profile's setting of the same name when not null.
OVERRIDABLE = (
    "epochs", "batch_size", "image_size", "train_subset", "val_subset", "device",
    "num_workers", "lr", "weight_decay", "label_smoothing", "amp", "augment_on_device", "devices_per_job",
)


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
    return json.loads(SCHEMA_FILE.read_text())


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


def cli_overrides(config: dict, path: Path = PARAMS_FILE) -> list[str]:
    """The `key=value` pairs by which Snakemake's config differs from params.yaml on disk.

    Snakemake passes them to every command as `--set key=value`, so `--config epochs=1`
    reaches the stages exactly as `dvc exp run -S epochs=1` does through the file.
    """
    on_disk = read_yaml(Path(path).read_text())
    return [f"{key}={_flow(value)}" for key, value in config.items() if on_disk.get(key) != value]


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
    """The active profile with `extends` followed and top-level overrides applied."""
    name = name or params["profile"]
    chain, seen = [], set()
    while name is not None:
        if name in seen:
            raise ConfigError(f"profiles.{name}.extends forms a cycle")
        seen.add(name)
        chain.append(params["profiles"][name])
        name = params["profiles"][name].get("extends")
    settings: dict = {}
    for layer in reversed(chain):
        settings.update({k: v for k, v in layer.items() if k != "extends"})
    settings.update({k: params[k] for k in OVERRIDABLE if params.get(k) is not None})
    missing = sorted(set(schema()["$defs"]["settings"]["properties"]) - {"extends"} - set(settings))
    if missing:
        raise ConfigError(f"profile {params['profile']!r} does not set {', '.join(missing)}")
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
    settings = profile_settings(params)
    per_arch = {key: value[arch] for key, value in settings.items()
                if key in ("image_size", "train_runtime_min") and isinstance(value, dict)}
    return {
        **settings, **per_arch,
        "run": run, "experiment": experiment, "arch": arch, "attention": attention, "seed": seed,
        "dataset": settings["datasets"][arch],
    }


def datasets(params: dict) -> list[str]:
    """The datasets the experiment matrix trains on under the active profile."""
    by_arch = profile_settings(params)["datasets"]
    return sorted({by_arch[arch] for arch in params["archs"]})
