"""The configs validate against the schema, and the paper config holds the paper's settings."""

import copy

import jsonschema
import pytest
import yaml
from conftest import REPO
from snakemake.utils import update_config, validate

from workflow.backbones import resolve_spec
from workflow.matchers import MATCHERS


def load(name):
    return yaml.safe_load((REPO / name).read_text())


def merged(overlay):
    config = load("config/config.yaml")
    update_config(config, load(overlay) if isinstance(overlay, str) else overlay)
    validate(config, str(REPO / "config/schema.yaml"))
    return config


@pytest.mark.parametrize("name", ["config/config.yaml", "config/animalclef2025.yaml", "tests/configs/tiny.yaml"])
def test_configs_validate(name):
    config = merged(name)
    for backbone in config["backbones"].values():
        resolve_spec(backbone)
    for matcher in config["wildfusion"]["matchers"]:
        options = config["matchers"].get(matcher, {})
        assert set(options) <= set(MATCHERS[matcher].default_conf), matcher


def test_schema_fills_defaults():
    config = {"data_root": "x", "backbones": {"b": {"source": "efficientnet-lite0"}}, "baseline": {"backbone": "b"}}
    validate(config, str(REPO / "config/schema.yaml"))
    assert config["threshold_tuning"]["repeats"] == 10
    assert config["wildfusion"] == {"matchers": [], "shards": 1, "weights": {}}


def test_paper_settings():
    config = merged("config/animalclef2025.yaml")
    assert config["backbones"]["megadescriptor"]["source"] == "megadescriptor-l-384"
    assert config["backbones"]["miewid"]["source"] == "miewid-msv3"
    assert config["shortlist"]["k_query"] == 300
    assert config["wildfusion"]["matchers"] == [
        "superpoint-lightglue", "aliked-lightglue", "disk-lightglue", "sift-lightglue", "loftr",
    ]  # fmt: skip
    assert config["matchers"]["loftr"]["resize"] == 192
    assert all(config["matchers"][m]["resize"] == 512 for m in config["wildfusion"]["matchers"][:4])
    assert config["thresholds"]["baseline"] == {
        "LynxID2025": 0.655, "SalamanderID2025": 0.770, "SeaTurtleID2022": 0.745, "default": "auto",
    }  # fmt: skip
    assert config["thresholds"]["wildfusion"]["LynxID2025"] == 0.395
    assert config["compute"]["match_shard"]["gpu"] == 1 and config["compute"]["embed"]["gpu"] == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"stages": ["baseline", "teleport"]},
        {"thresholds": {"baseline": {"default": "high"}}},
        {"wildfusion": {"matchers": ["nonexistent"]}},
        {"backbones": {"b": {"source": "x", "colour": 1}}},
    ],
)
def test_schema_rejects_bad_values(edit):
    config = load("config/config.yaml")
    update_config(config, copy.deepcopy(edit))
    with pytest.raises((jsonschema.ValidationError, Exception)):
        validate(config, str(REPO / "config/schema.yaml"))
