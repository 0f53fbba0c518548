"""params.yaml: validation messages, profile resolution, overrides."""

from __future__ import annotations

import pytest

from pipeline.dag import config
from tests.conftest import ROOT


@pytest.fixture
def params(monkeypatch):
    monkeypatch.chdir(ROOT)
    return config.load()


def test_default_profile_is_demo_on_digits(params):
    assert params["profile"] == "demo"
    assert set(config.profile_settings(params)["datasets"].values()) == {"digits"}
    # the post's four configurations and the gate control beside na-blog, at two seeds
    assert config.runs(params) == [f"{arch}-{attention}-s{seed}" for arch in ("alexnet", "resnet18")
                                   for attention in ("none", "na-blog", "gate") for seed in (42, 43)]


def test_paper_profile_is_the_posts_recipe(params):
    params = {**params, "profile": "paper"}
    s = config.run_settings(params, "alexnet-na-blog-s42")
    assert (s["arch"], s["attention"], s["dataset"], s["seed"]) == ("alexnet", "na-blog", "cifar10", 42)
    assert (s["image_size"], s["epochs"], s["batch_size"], s["lr"]) == (128, 50, 128, 0.001)
    assert (s["weight_decay"], s["label_smoothing"], s["device"]) == (1e-5, 0.1, "gpu")
    assert config.run_settings(params, "resnet18-none-s42")["dataset"] == "cifar100"


# What each small profile may change of the paper's recipe; every other setting must be the
# paper's, since each profile writes its settings out in full (see params.yaml).
DIFFERS = {
    "demo": {"datasets", "image_size", "epochs", "batch_size", "device", "train_threads", "train_mem_mb",
             "num_workers"},
    "ci": {"datasets", "image_size", "epochs", "batch_size", "device", "train_threads", "train_mem_mb",
           "num_workers", "train_subset", "val_subset"},
}


@pytest.mark.parametrize("profile", DIFFERS)
def test_the_small_profiles_follow_the_papers_recipe(params, profile):
    paper, mine = params["profiles"]["paper"], params["profiles"][profile]
    assert {k for k in paper if paper[k] != mine[k]} <= DIFFERS[profile]
    assert {k for k in mine if mine[k] != params["profiles"]["demo"][k]} <= {"epochs", "train_subset", "val_subset"}


def test_demo_resolves_per_arch_sizes(params):
    s = config.run_settings(params, "resnet18-none-s42")
    assert s["image_size"] == 16 and s["lr"] == 0.001 and s["device"] == "auto"
    assert config.run_settings(params, "alexnet-none-s42")["image_size"] == 64


@pytest.mark.faults
def test_a_profile_that_misses_a_setting_is_refused_in_one_line(params):
    del params["profiles"]["ci"]["lr"]
    with pytest.raises(config.ConfigError) as err:
        config.validate(params)
    assert "profiles.ci" in str(err.value) and "'lr' is a required property" in str(err.value)


def test_every_setting_is_either_result_changing_or_run_only():
    settings = set(config.schema()["$defs"]["settings"]["properties"])
    assert set(config.RESULT_SETTINGS) | set(config.RUN_ONLY_SETTINGS) == settings
    assert not set(config.RESULT_SETTINGS) & set(config.RUN_ONLY_SETTINGS)
    assert set(config.overridable()) <= set(config.RESULT_SETTINGS)  # every override makes its own configuration


def test_configuration_names_the_profile_and_a_key_of_the_overrides(params):
    assert config.configuration(params) == "demo"
    one = config.configuration({**params, "profile": "paper", "epochs": 1})
    assert one.startswith("paper-") and len(one) == len("paper-") + 8
    assert config.configuration({**params, "profile": "paper", "epochs": 2}) != one
    # `--config profile=paper` is an override too: DVC's `paper` folder is for params.yaml saying paper.
    assert config.configuration({**params, "profile": "paper"}).startswith("paper-")


def test_top_level_overrides_win_over_the_profile(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = config.load(["profile=paper", "epochs=1", "device=cpu", "train_subset=5000"])
    s = config.run_settings(params, "alexnet-none-s42")
    assert (s["epochs"], s["device"], s["train_subset"], s["image_size"]) == (1, "cpu", 5000, 128)


@pytest.mark.faults
@pytest.mark.parametrize(
    "override, expected",
    [
        ("epoch=3", "unknown key epoch; allowed keys there:"),
        ("profile=papers", "profile is 'papers'; allowed values: demo, paper, ci"),
        ("attentions=[na]", "attentions.0 is 'na'; allowed values: none, na-blog, na-official, na-paper, gate"),
        ("epochs=-1", "epochs: -1 is less than the minimum of 1"),
        ("epochs=many", "epochs: 'many' is not of type 'integer'"),
        ("device=tpu", "device is 'tpu'; allowed values: auto, cpu, gpu"),
    ],
)
def test_bad_values_give_one_clear_line(monkeypatch, override, expected):
    monkeypatch.chdir(ROOT)
    with pytest.raises(config.ConfigError) as err:
        config.load([override])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_cli_overrides_are_the_differences_from_the_file(params):
    assert config.cli_overrides(params) == []
    changed = {**params, "profile": "paper", "epochs": 2, "image_size": {"alexnet": 96, "resnet18": 32}}
    assert sorted(config.cli_overrides(changed)) == [
        "epochs=2", 'image_size={"alexnet":96,"resnet18":32}', 'profile="paper"']
    # ...and they parse back to the same values.
    assert dict(map(config.parse_override, config.cli_overrides(changed)))["image_size"] == {"alexnet": 96,
                                                                                            "resnet18": 32}


def test_run_names_round_trip():
    assert config.parse_run(config.run_name("resnet18-na-blog", 7)) == ("resnet18-na-blog", 7)
    assert config.split_experiment("resnet18-na-blog") == ("resnet18", "na-blog")
    with pytest.raises(config.ConfigError):
        config.parse_run("alexnet-none")


def test_snakemake_config_strings_are_typed_like_the_file(params):
    # What `snakemake --config 'seeds=[42,43]' 'image_size={alexnet: 96, resnet18: 32}'` hands the Snakefile.
    raw = {**params, "seeds": ["42", "43"], "image_size": {"alexnet": "96", "resnet18": "32"}}
    typed = config.typed_snakemake_config(raw)
    assert typed["seeds"] == [42, 43] and typed["image_size"] == {"alexnet": 96, "resnet18": 32}
    assert typed["profiles"] is params["profiles"]  # untouched where it equals params.yaml
    config.validate(typed)


def test_exponent_numbers_are_numbers_as_in_dvc():
    assert config.parse_override("lr=1e-4") == ("lr", 1e-4)
    assert config.parse_override("weight_decay=5E-6") == ("weight_decay", 5e-6)


def test_params_read_the_same_as_yaml_1_1_and_1_2(params):
    """`dvc exp run -S` rewrites params.yaml with YAML 1.2 (ruamel) and drops quotes it deems
    unneeded, while PyYAML (Snakemake, pipeline.dag.config) reads YAML 1.1, where e.g. off/yes/no
    are booleans. A value both read alike survives the rewrite."""
    import io

    import yaml
    from ruamel.yaml import YAML

    text = config.PARAMS_FILE.read_text()
    yaml12 = YAML(typ="safe", pure=True)
    buffer = io.StringIO()
    YAML().dump(YAML().load(text), buffer)  # what a round trip through ruamel writes back
    assert yaml.safe_load(buffer.getvalue()) == yaml12.load(text) == yaml.safe_load(text)


def test_the_per_architecture_settings_are_those_the_schema_keys_by_architecture():
    schema = config.schema()
    archs = set(schema["properties"]["archs"]["items"]["enum"])

    def keyed_by_arch(prop: dict) -> bool:
        if "$ref" in prop:
            prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
        return any(keyed_by_arch(p) for p in prop["anyOf"]) if "anyOf" in prop else (
            prop.get("type") == "object" and set(prop["properties"]) == archs)

    settings = schema["$defs"]["settings"]["properties"]
    assert set(config.PER_ARCH) == {key for key, prop in settings.items() if keyed_by_arch(prop)}
