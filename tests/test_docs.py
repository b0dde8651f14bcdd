"""The user docs: README size and paths, and the configuration reference generated from the schema."""

import importlib.util
import re
import sys

import pytest
from conftest import REPO

README_MAX_BYTES = 10_240


def load_generator():
    spec = importlib.util.spec_from_file_location("config_docs", REPO / "scripts" / "config_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config_docs():
    return load_generator()


def test_configuration_reference_is_current(config_docs):
    expected = config_docs.render(config_docs.load_schema(REPO / "config" / "schema.yaml"))
    current = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert current == expected, "docs/configuration.md is stale: regenerate it with `python scripts/config_docs.py`"


def test_check_mode_reports_stale_file(config_docs, tmp_path, capsys):
    out = tmp_path / "configuration.md"
    schema = REPO / "config" / "schema.yaml"
    assert config_docs.main(["--schema", str(schema), "--out", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert config_docs.main(["--schema", str(schema), "--out", str(out)]) == 0
    assert config_docs.main(["--schema", str(schema), "--out", str(out), "--check"]) == 0


def test_every_top_level_key_has_a_section(config_docs):
    schema = config_docs.load_schema(REPO / "config" / "schema.yaml")
    text = config_docs.render(schema)
    for key in schema["properties"]:
        assert f"## `{key}`" in text


def test_generator_handles_nested_shapes(config_docs):
    schema = {
        "$defs": {
            "value": {"description": "a value", "oneOf": [{"type": "number", "minimum": 0}, {"enum": ["auto"]}]},
            "node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/node"}, "size": {"type": "integer", "default": 3}},
            },
        },
        "type": "object",
        "required": ["maps"],
        "properties": {
            "maps": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"level": {"$ref": "#/$defs/value", "description": "own text wins"}},
                },
            },
            "patterned": {"type": "object", "patternProperties": {"^x": {"type": "object", "properties": {"y": {}}}}},
            "items": {
                "type": ["array", "null"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
            },
            "either": {
                "anyOf": [
                    {"type": "string", "enum": ["a", "b"]},
                    {"type": "object", "properties": {"inner": {"type": "boolean", "default": False}}},
                ]
            },
            "tree": {"$ref": "#/$defs/node"},
            "free": {"type": "object", "additionalProperties": True, "default": {}},
            "named": {
                "type": "object",
                "properties": {"fixed": {"type": "string"}},
                "additionalProperties": {"$ref": "#/$defs/value"},
                "propertyNames": {"pattern": "^[a-z]+$"},
            },
            "merged": {"allOf": [{"$ref": "#/$defs/node"}, {"properties": {"extra": {"type": "integer"}}}]},
            "forbidden": False,
            "legacy_items": {"items": [{"type": "string"}]},
        },
    }
    text = config_docs.render(schema)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert "**required.**" in rows["`maps`"]
    assert "own text wins" in rows["`maps.<name>.level`"]
    assert "number (>= 0) or `auto`" in rows["`maps.<name>.level`"]
    assert "`patterned.<name>.y`" in rows
    assert "**required.**" in rows["`items[].name`"]
    assert "list of mapping or null" in rows["`items`"]
    assert "one of `a`, `b` or mapping" in rows["`either`"]
    assert "`false`" in rows["`either.inner`"]
    assert "`3`" in rows["`tree.size`"]
    assert "`tree.child`" in rows and "(see node)" in rows["`tree.child`"]
    assert "`free`" in rows
    assert "`named.fixed`" in rows and "number (>= 0) or `auto`" in rows["`named.<name>`"]
    assert "`merged.size`" in rows and "`merged.extra`" in rows
    assert "not allowed" in rows["`forbidden`"]
    assert "list of any" in rows["`legacy_items`"]


def test_readme_is_short_and_self_contained():
    readme = REPO / "README.md"
    size = readme.stat().st_size
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; keep it at most {README_MAX_BYTES}"
    text = readme.read_text(encoding="utf-8")
    assert "../shared" not in text, "README.md names a path outside the repository"


def test_readme_links_to_existing_files():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = {t for t in re.findall(r"\]\(([^)#\s]+)\)", text) if "://" not in t}
    missing = sorted(t for t in targets if not (REPO / t).exists())
    assert not missing, f"README.md links to files that do not exist: {missing}"
