"""Values nested in --config (``review={thumbnail: 480}``), which Snakemake reads as text, given their types."""

from __future__ import annotations

from workflow.config_check import load_schema
from workflow.config_cli import retype_nested


def test_nested_command_line_values_get_the_schema_types():
    given = {  # as Snakemake's --config parser returns them: nested scalars are text
        "review": {"thumbnail": "480", "uncertain_share": "0.3", "matcher": "null", "new_name_prefix": "007"},
        "wildfusion": {"matchers": ["rootsift"], "shards": "2"},
        "thresholds": {"wildfusion": {"default": "0.5"}, "rerank": {"default": "auto"}},
        "stages": ["baseline", "wildfusion"],
    }
    config = {key: (dict(value) if isinstance(value, dict) else list(value)) for key, value in given.items()}
    config["thresholds"] = {k: dict(v) for k, v in given["thresholds"].items()}
    changed = retype_nested(config, given, load_schema())
    assert config["review"] == {"thumbnail": 480, "uncertain_share": 0.3, "matcher": None, "new_name_prefix": "007"}
    assert config["wildfusion"] == {"matchers": ["rootsift"], "shards": 2}
    assert config["thresholds"] == {"wildfusion": {"default": 0.5}, "rerank": {"default": "auto"}}
    assert sorted(changed) == ["review.matcher", "review.thumbnail", "review.uncertain_share",
                               "thresholds.wildfusion.default", "wildfusion.shards"]  # fmt: skip
    bad = {"review": {"thumbnail": "big"}}
    config = {"review": {"thumbnail": "big"}}
    assert retype_nested(config, bad, load_schema()) == [] and config["review"]["thumbnail"] == "big"
