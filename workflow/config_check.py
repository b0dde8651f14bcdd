"""Config checks run when the Snakefile is parsed, before any job: every mistake is named with its key and fix.

Inputs
    the merged config (a mapping, as Snakemake holds it), ``config/schema.yaml`` (JSON schema, draft 2020-12)
    and the dataset names of the data (the ``dataset`` column of ``metadata.csv``).
Outputs
    :func:`schema_problems`: one message per schema violation (unknown key with its closest spelling, wrong
    type, value out of its scale, ...); :func:`data_problems`: ``(errors, warnings)`` of the checks that need
    the data (per-dataset keys, cascade sources, backbone references); :func:`check_config` raises
    :class:`ConfigError` listing every error.

Per-dataset keys (``thresholds.<stage>.<dataset>``, ``cascade.<dataset>``, ``dual_backbone.head|augment.
<dataset>``, ``rerank.datasets``) that name no dataset of the data only warn: one config serves several data
sets (the paper config is overlaid on the demo config, so both name their own datasets). A key that is a near
miss of a dataset of the data (same letters up to case, or a close spelling) is an error with a did-you-mean,
because such a typo silently falls back to the ``default`` entry.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from workflow.stages import SIMULATED

SCHEMA_FILE = "config/schema.yaml"
# Similarity (difflib ratio) from which a per-dataset key is taken for a misspelt dataset name.
NEAR_MISS_CUTOFF = 0.8
# Keys of head/augment that are settings, not dataset names.
HEAD_KEYS = ("s", "m", "easy_margin")


class ConfigError(ValueError):
    """The config has mistakes; the message lists each with its key and fix."""


def _key(path: Iterable[Any]) -> str:
    parts = [str(p) if not isinstance(p, int) else f"[{p}]" for p in path]
    return ".".join(parts).replace(".[", "[") or "(top level)"


def _suggest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, else ``"."``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else "."


def _schema_at(root: Mapping, path: Sequence[Any]) -> Any:
    """The subschema of ``root`` at a jsonschema ``absolute_schema_path`` (following local ``$ref``)."""
    node: Any = root
    for part in path:
        if part == "$ref" and isinstance(node, Mapping):
            target: Any = root
            for name in str(node["$ref"]).removeprefix("#/").split("/"):
                target = target[name]
            node = target
        else:
            node = node[part]
    return node


def load_schema(path: str | Path = SCHEMA_FILE) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


@functools.cache
def _repository_schema() -> dict:
    return load_schema(Path(__file__).resolve().parents[1] / SCHEMA_FILE)


def schema_defaults(*section: str) -> dict[str, Any]:
    """The defaults ``config/schema.yaml`` gives the keys of the config section ``section`` (e.g. ``"demo"``).

    For code that reads a section without the Snakefile's validation (a standalone entry point): the schema stays
    the one place where a default is written.
    """
    node: Any = _repository_schema()
    for key in section:
        node = node["properties"][key]
    return {key: copy.deepcopy(sub["default"]) for key, sub in node.get("properties", {}).items() if "default" in sub}


def _format(error, root: Mapping) -> str:
    """One schema violation as ``config key <path>: <problem>. <fix>``."""
    key = _key(error.absolute_path)
    schema, value, kind = error.schema, error.instance, error.validator
    where = f"config key {key}"
    described = f" ({schema['description']})" if isinstance(schema, Mapping) and "description" in schema else ""
    schema_path = list(error.absolute_schema_path)
    if "propertyNames" in schema_path:  # the instance is the key itself, the path that of its parent
        parent = _schema_at(root, schema_path[: schema_path.index("propertyNames")])
        names = parent["propertyNames"]
        if "pattern" in names:
            at = _key([*error.absolute_path, value])
            return f"config key {at}: key names must match {names['pattern']}: rename it."
        return (
            f"config key {_key([*error.absolute_path, value])}: unknown key{_suggest(value, names['enum'])} Fix the "
            f"spelling or remove it (known here: {', '.join(map(str, names['enum']))})."
        )
    if kind in ("additionalProperties", "unevaluatedProperties"):
        allowed = list(schema.get("properties", {}))
        extra = [k for k in value if k not in allowed] if isinstance(value, Mapping) else []
        return "\n".join(
            f"config key {_key([*error.absolute_path, name])}: unknown key{_suggest(name, allowed)} Fix the spelling "
            f"or remove it (known here: {', '.join(map(str, allowed))})."
            for name in extra
        )
    hint = ""
    if "additionalProperties" in schema_path and error.absolute_path:
        # a value under a mapping's free keys (dataset names): the key may be a misspelt fixed key
        cut = len(schema_path) - 1 - schema_path[::-1].index("additionalProperties")
        parent = _schema_at(root, schema_path[:cut])
        fixed = list(parent.get("properties", {})) if isinstance(parent, Mapping) else []
        name = error.absolute_path[-1] if cut == len(schema_path) - 2 or schema_path[cut + 1] == "$ref" else None
        if fixed and isinstance(name, str):
            close = difflib.get_close_matches(name, fixed, n=1, cutoff=0.6)
            hint = f" If {name!r} is meant as the setting {close[0]!r}, fix its spelling." if close else ""
    if kind == "required":
        return f"{where}: {error.message}: add it{described}."
    if kind == "enum":
        choices = schema["enum"]
        return f"{where}: {value!r} is not one of {choices}{_suggest(value, map(str, choices))} Use one of them."
    if kind == "pattern" and schema.get("pattern") == "^auto$":
        return f"{where}: {value!r} is not a number or 'auto': give a number or auto{described}.{hint}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        bound = f"in [{low}, {high}]" if low is not None and high is not None else error.message.split(" is ", 1)[-1]
        return f"{where}: {value!r} is out of range: it must be {bound}{described}. Change the value.{hint}"
    if kind == "type":
        want = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return f"{where}: {value!r} is a {type(value).__name__}, expected {' or '.join(want)}{described}.{hint}"
    if kind == "not":
        return f"{where}: give override_above or override_at_or_above, not both: remove one."
    return f"{where}: {error.message}{described}.{hint}"


def _strict_validator():
    """Draft 2020-12 whose ``integer`` is an int only (JSON Schema also counts ``2.0``, which then fails late)."""
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return validators.extend(Draft202012Validator, type_checker=checker)


def non_finite_problems(config: Any, path: tuple = ()) -> list[str]:
    """Every ``.nan``/``.inf`` number in the config, by key (none is a meaningful setting: NaN compares false)."""
    if isinstance(config, Mapping):
        return [line for key, value in config.items() for line in non_finite_problems(value, (*path, key))]
    if isinstance(config, list | tuple):
        return [line for i, value in enumerate(config) for line in non_finite_problems(value, (*path, i))]
    if isinstance(config, float) and not math.isfinite(config):
        return [f"config key {_key(path)}: {config!r} is not a finite number: give a number (or auto where allowed)."]
    return []


def schema_problems(config: Mapping, schema: Mapping) -> list[str]:
    """Every violation of ``schema`` by ``config`` and every non-finite number, formatted (see :func:`_format`),
    in key order."""
    errors = sorted(_strict_validator()(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    problems = non_finite_problems(config) + [_format(e, schema) for e in errors]
    return list(dict.fromkeys(problems))  # (then/else can repeat a base error)


def _dataset_keys(config: Mapping) -> list[tuple[str, str]]:
    """``(config key, dataset name)`` of every key of the config that names a dataset."""
    found = []
    for stage, value in (config.get("thresholds") or {}).items():
        if isinstance(value, Mapping):
            found += [(f"thresholds.{stage}.{name}", name) for name in value if name != "default"]
    found += [(f"cascade.{name}", name) for name in (config.get("cascade") or {}) if name != "default"]
    db = config.get("dual_backbone") or {}
    for section, settings in (("head", HEAD_KEYS), ("augment", None)):
        value = db.get(section) or {}
        if not isinstance(value, Mapping):
            continue
        for name, sub in value.items():
            if name == "default" or (settings and name in settings) or not isinstance(sub, Mapping):
                continue
            if section == "augment" and name in _AUGMENT_KEYS:
                continue
            found.append((f"dual_backbone.{section}.{name}", name))
    rerank_datasets = (config.get("rerank") or {}).get("datasets") or []
    for i, name in enumerate([] if isinstance(rerank_datasets, str) else rerank_datasets):  # "auto": no names
        found.append((f"rerank.datasets[{i}]", name))
    return found


_AUGMENT_KEYS = ("background", "grabcut_margin", "grabcut_iterations", "grabcut_max_side", "rotate_by_orientation",
                 "crop_scale", "hflip", "color_jitter", "coarse_dropout")  # fmt: skip


def _near_miss(name: str, datasets: Sequence[str]) -> str | None:
    lower = {d.lower(): d for d in datasets}
    if str(name).lower() in lower:
        return lower[str(name).lower()]
    close = difflib.get_close_matches(str(name), list(datasets), n=1, cutoff=NEAR_MISS_CUTOFF)
    return close[0] if close else None


def small_gallery_problems(config: Mapping, gallery_sizes: Mapping[str, int]) -> list[str]:
    """A dataset whose gallery has one individual cannot tune an ``auto`` threshold (a simulated open-set split
    holds out at least one individual and keeps at least one): one error per stage run with ``auto`` there."""
    errors = []
    thresholds = config.get("thresholds") or {}
    stages = [s for s in config.get("stages") or [] if s in SIMULATED]  # thresholds tuned on simulated splits
    for name, size in sorted(gallery_sizes.items()):
        if size != 1:  # 0: no gallery (discovery only), 2 or more: splits work
            continue
        for stage in stages:
            setting = thresholds.get(stage, "auto")
            where = f"thresholds.{stage}"
            if isinstance(setting, Mapping):
                where = f"thresholds.{stage}.{name}" if name in setting else f"thresholds.{stage}.default"
                setting = setting.get(name, setting.get("default", "auto"))
            if setting == "auto":
                errors.append(
                    f"config key {where}: auto for dataset {name!r}, whose gallery has 1 individual; an auto "
                    "threshold is tuned by holding out gallery individuals, which needs at least 2. Give a fixed "
                    f"threshold for it, e.g. thresholds.{stage}.{name}: 0.5 (or add database rows of a second "
                    "individual)."
                )
        steps = (config.get("cascade") or {}).get(name, (config.get("cascade") or {}).get("default"))
        if "cascade" in (config.get("stages") or []) and steps == "auto":
            errors.append(
                f"config key cascade.{name}: auto for dataset {name!r}, whose gallery has 1 individual; cascade: auto "
                f"is chosen on simulated open-set splits, which need at least 2. Give its steps, e.g. cascade.{name}: "
                "[{source: baseline, new_below: 0.5}]."
            )
    return errors


def data_problems(
    config: Mapping, datasets: Sequence[str], gallery_sizes: Mapping[str, int] | None = None
) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of the checks that need the data's dataset names and gallery sizes (see the module
    docstring)."""
    errors: list[str] = small_gallery_problems(config, gallery_sizes or {})
    warnings: list[str] = []
    datasets = [str(d) for d in datasets]
    for key, name in _dataset_keys(config):
        if name in datasets:
            continue
        near = _near_miss(name, datasets)
        if near is not None:
            errors.append(
                f"config key {key}: {name!r} is not a dataset of this data, but close to {near!r}: did you mean "
                f"{near!r}? Rename the key (as written it is ignored and {near!r} falls back to the default)."
            )
        else:
            warnings.append(
                f"config key {key}: {name!r} names no dataset of this data ({', '.join(datasets)}); "
                "it is ignored on this data."
            )
    backbones = list(config.get("backbones") or {})

    def backbone_ref(key: str, name: Any) -> None:
        if name not in backbones:
            errors.append(
                f"config key {key}: {name!r} is not a key of backbones{_suggest(name, backbones)} "
                f"Name one of {backbones} or add it under backbones."
            )

    if "baseline" in config and "backbone" in config["baseline"]:
        backbone_ref("baseline.backbone", config["baseline"]["backbone"])
    shortlist_backbone = (config.get("shortlist") or {}).get("backbone")
    if shortlist_backbone is not None and shortlist_backbone != "trained":  # trained: the dual-backbone's embedding
        backbone_ref("shortlist.backbone", shortlist_backbone)
    for section in ("xgboost", "dual_backbone"):
        for i, name in enumerate((config.get(section) or {}).get("backbones") or []):
            backbone_ref(f"{section}.backbones[{i}]", name)
    wildfusion = config.get("wildfusion") or {}
    matchers = list(wildfusion.get("matchers") or [])
    trained = wildfusion.get("trained")
    for name in wildfusion.get("weights") or {}:
        if name == "trained" and trained is False:
            errors.append("config key wildfusion.weights.trained: the trained source is off: set "
                          "wildfusion.trained: true or remove the weight.")  # fmt: skip
        elif name == "lnbnn" and not wildfusion.get("lnbnn", False):
            errors.append("config key wildfusion.weights.lnbnn: the lnbnn source is off: set wildfusion.lnbnn: "
                          "true or auto, or remove the weight.")  # fmt: skip
        elif name not in ("cosine", "trained", "lnbnn") and name not in matchers:
            errors.append(
                f"config key wildfusion.weights.{name}: {name!r} is neither cosine nor a matcher of "
                f"wildfusion.matchers {matchers}: add it to wildfusion.matchers or remove the weight."
            )
    mode = (config.get("dual_backbone") or {}).get("mode")
    if trained is True and mode == "finetune":  # auto: the source is left out in the fine-tuning mode
        errors.append(f"config key wildfusion.trained: the trained fusion source needs dual_backbone.mode: frozen "
                      f"(it is {mode!r}); set wildfusion.trained: false or auto, or dual_backbone.mode: "
                      "frozen.")  # fmt: skip
    errors += _cascade_problems(config, datasets)
    return errors, warnings


def _cascade_problems(config: Mapping, datasets: Sequence[str]) -> list[str]:
    stages = list(config.get("stages") or [])
    if "cascade" not in stages and (config.get("submission") or {}).get("stage") != "cascade":
        return []
    steps = {name: value for name, value in (config.get("cascade") or {}).items() if value is not None}
    errors = []
    uncovered = [d for d in datasets if d not in steps]
    if "default" not in steps:
        errors += [
            f"config key cascade: no steps for dataset {name!r}: add a list of steps under cascade.{name} (or "
            "cascade.default), e.g. [{source: wildfusion, new_below: auto}]."
            for name in uncovered
        ]
    used = [d for d in datasets if d in steps] + (["default"] if uncovered and "default" in steps else [])
    for name in used:
        for i, step in enumerate(steps[name] or []):
            source = step.get("source") if isinstance(step, Mapping) else None
            if source is not None and source not in stages:
                errors.append(
                    f"config key cascade.{name}[{i}].source: stage {source!r} is not in stages {stages}: add "
                    f"{source!r} to stages or remove the step."
                )
    return errors


def check_config(config: Mapping, schema: Mapping | str | Path = SCHEMA_FILE, datasets: Sequence[str] | None = None,
                 warn=None, gallery_sizes: Mapping[str, int] | None = None) -> list[str]:  # fmt: skip
    """Raise :class:`ConfigError` listing every mistake; return the warnings (also passed to ``warn``).

    Without ``datasets`` only the schema is checked.
    """
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    problems = schema_problems(config, schema)
    warnings: list[str] = []
    if datasets is not None and not problems:
        problems, warnings = data_problems(config, datasets, gallery_sizes)
    if problems:
        raise ConfigError(
            f"{len(problems)} config problem(s) (config/schema.yaml documents every key):\n" + "\n".join(problems)
        )
    for line in warnings:
        if warn is not None:
            warn(line)
    return warnings
