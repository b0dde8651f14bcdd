"""Values nested in ``--config`` given their schema types.

Snakemake reads ``--config 'review={thumbnail: 480}'`` with YAML's base loader, so every value nested in a mapping
or list arrives as text (``'480'``). :func:`retype_nested` converts each such text, where the schema
(``config/schema.yaml``) accepts a number, a boolean or null there and YAML reads one from it, into that value
(``480``; ``null`` for a key that is text or null). Everything else is left to
:func:`workflow.config_check.check_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import yaml

_PYTHON = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def _resolve(root: Mapping, node: Any) -> Any:
    while isinstance(node, Mapping) and "$ref" in node:
        target: Any = root
        for name in str(node["$ref"]).removeprefix("#/").split("/"):
            target = target[name]
        node = target
    return node


def _types(root: Mapping, node: Any) -> set[str]:
    """Every JSON type ``node`` accepts (through ``$ref``, ``oneOf``/``anyOf``), or an empty set if unknown."""
    node = _resolve(root, node)
    if not isinstance(node, Mapping):
        return set()
    found = set(node["type"] if isinstance(node.get("type"), list) else [node["type"]] if "type" in node else [])
    for key in ("oneOf", "anyOf"):
        for part in node.get(key, []):
            found |= _types(root, part)
    if "enum" in node and not found:
        found.add("string")
    return found


def _child(root: Mapping, node: Any, key: Any) -> Any:
    node = _resolve(root, node)
    if not isinstance(node, Mapping):
        return None
    if isinstance(key, int):
        return node.get("items")
    props = node.get("properties", {})
    if key in props:
        return props[key]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, Mapping) else None


def _convert(text: str, wanted: set[str]) -> Any:
    if not wanted - {"string"}:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    ok = any(isinstance(value, _PYTHON[t]) and not (t in ("integer", "number") and isinstance(value, bool))
             for t in wanted if t in _PYTHON)  # fmt: skip
    return value if ok else text


def retype_nested(config: MutableMapping, given: Mapping, schema: Mapping) -> list[str]:
    """Convert in ``config`` the texts nested in the ``--config`` values ``given``; returns the keys converted."""
    changed: list[str] = []

    def walk(target: Any, value: Any, node: Any, path: list) -> None:
        items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else []
        for key, item in items:
            sub = _child(schema, node, key) if node is not None else None
            try:
                current = target[key]
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(item, str) and isinstance(current, str):
                new = _convert(current, _types(schema, sub) if sub is not None else set())
                if new is not current:
                    target[key] = new
                    changed.append(".".join(map(str, [*path, key])))
            elif isinstance(item, (Mapping, list)):
                walk(current, item, sub, [*path, key])

    for key, value in given.items():
        if isinstance(value, (Mapping, list)) and key in config:
            walk(config[key], value, _child(schema, schema, key), [key])
    return changed
