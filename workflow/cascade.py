"""Cascade: combine the predictions of several stages per dataset by an ordered list of steps from config.

A pure engine: no species logic lives here, only in the configuration (see :data:`PAPER_CASCADE`).

Inputs
    ``sources``: ``{source name: DataFrame(image_id, top_identity, top_score)}``, the ``predictions.tsv`` of
    the stages named by the steps (extra columns are ignored); ``steps``: the dataset's list of steps.
Outputs
    ``DataFrame(image_id, identity, decided_by)``, one row per image of the first step's source, in its order.
    ``decided_by`` is ``<source>:<action>`` of the last step that set the label, action one of ``label``
    (the first step's top identity), ``new`` (set to ``new_individual``) or ``override`` (the step's top identity).

Step kinds (keys of one step; thresholds are on the source's ``top_score`` scale):

first step (defines the initial label)
    ``{source: S, new_below: t}``: label = S's ``top_identity``; ``new_individual`` where ``top_score < t``
    (a missing or non-finite score, or an empty identity, also gives ``new_individual``). ``new_below`` may be
    left out (the top identity is always kept). Override keys are refused here.
    ``agree_with: B`` and ``agree_new_below: t2`` (together, first step only): where stage B's ``top_identity``
    equals S's, the threshold is ``t2`` instead of ``t`` (two stages that agree on an individual are more often
    right than either alone; ``t2 <= t``).
later steps (refine the label; each key optional, at least one required)
    ``override_at_or_above: t`` / ``override_above: t``: label = S's ``top_identity`` where ``top_score >= t``
    (resp. ``> t``); ``new_below: t``: label = ``new_individual`` where ``top_score < t``. An override is tested
    first; the thresholds must not overlap (override threshold >= ``new_below``). Images S has no row for, or a
    non-finite score, keep their label.

A threshold may also be ``auto``: the source stage's own chosen threshold (``threshold`` of its
``threshold.json``, on the same ``top_score`` scale: the fused/re-ranked probability of wildfusion/rerank, the
gate probability of xgboost, ``(cos + 1) / 2`` of dual_backbone and baseline). :func:`resolve_auto` replaces
it before :func:`run_cascade`; no query label is ever read.

The whole list may also be ``auto``: :mod:`workflow.cascade_auto` chooses the steps from the sources'
``pseudo.parquet`` (simulated open-set splits of the gallery), never from query labels.

Entry point (``python -m workflow.cascade``): ``--steps`` (JSON list or ``"auto"``), ``--source
NAME=predictions.tsv`` and ``--threshold NAME=threshold.json`` (or, for ``auto``, ``--pseudo NAME=pseudo.parquet``)
per source; writes ``choice.json`` (``--choice``: the steps used, and for ``auto`` their simulated scores) and
``predictions.tsv`` with ``image_id, identity, top_identity, top_score, decided_by``, where
``top_identity``/``top_score`` are those of the source that decided the label (``decided_by``), on that source's scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.cascade_auto import choose_cascade
from workflow.cli import arg, named_paths, run_stage, stage_parser
from workflow.stage_io import read_json, read_tsv, write_json, write_tsv
from workflow.stages import SOURCES

logger = logging.getLogger(__name__)

THRESHOLD_KEYS: tuple[str, ...] = ("new_below", "override_above", "override_at_or_above")
AGREE_KEYS: tuple[str, ...] = ("agree_with", "agree_new_below")
SOURCE_COLUMNS: tuple[str, ...] = ("image_id", "top_identity", "top_score")

AUTO = "auto"


PAPER_CASCADE: dict[str, list[dict[str, Any]]] = {
    "LynxID2025": [
        {"source": "rerank", "new_below": 0.397},
        {"source": "xgboost", "override_at_or_above": 0.99},
        {"source": "dual_backbone", "new_below": 0.64, "override_above": 0.893},
    ],
    "SalamanderID2025": [
        {"source": "wildfusion", "new_below": 0.13},
        {"source": "dual_backbone", "new_below": 0.62, "override_above": 0.80},
    ],
    "SeaTurtleID2022": [
        {"source": "dual_backbone", "new_below": 0.703},
    ],
}
"""The paper's final meta-algorithm (Sec. 4): lynx WildFusion + re-ranking, XGBoost, dual-backbone; salamander
WildFusion, dual-backbone; turtle dual-backbone only."""


class CascadeConfigError(ValueError):
    """A cascade step list is invalid (unknown key or source, bad threshold, override on the first step)."""


def validate_steps(steps: Sequence[Mapping[str, Any]], known_sources: Sequence[str] = SOURCES) -> list[dict]:
    """Check ``steps`` and return them as plain dicts with float thresholds; raises :class:`CascadeConfigError`."""
    if isinstance(steps, Mapping | str) or not isinstance(steps, Sequence) or len(steps) == 0:
        raise CascadeConfigError(f"cascade steps must be a non-empty list of mappings, got {steps!r}")
    out = []
    for i, step in enumerate(steps):
        where = f"cascade step {i + 1} ({step!r})"
        if not isinstance(step, Mapping):
            raise CascadeConfigError(f"{where}: must be a mapping like {{source: wildfusion, new_below: 0.4}}")
        unknown = sorted(set(step) - {"source", *THRESHOLD_KEYS, *AGREE_KEYS})
        if unknown:
            raise CascadeConfigError(f"{where}: unknown key(s) {unknown}; allowed: source, "
                                     f"{', '.join(THRESHOLD_KEYS + AGREE_KEYS)}")  # fmt: skip
        if step.get("source") not in known_sources:
            raise CascadeConfigError(
                f"{where}: source must be one of {list(known_sources)}, got {step.get('source')!r}"
            )
        clean: dict[str, Any] = {"source": step["source"]}
        for key in THRESHOLD_KEYS:
            if key not in step:
                continue
            value = step[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise CascadeConfigError(f"{where}: {key} must be a finite number, got {value!r}")
            clean[key] = float(value)
        if any(k in step for k in AGREE_KEYS):
            if i > 0:
                raise CascadeConfigError(f"{where}: {list(AGREE_KEYS)} belong to the first step only")
            if not all(k in step for k in AGREE_KEYS) or "new_below" not in clean:
                raise CascadeConfigError(f"{where}: agree_with needs agree_new_below and new_below")
            if step["agree_with"] not in known_sources or step["agree_with"] == step["source"]:
                raise CascadeConfigError(f"{where}: agree_with must be another of {list(known_sources)}")
            value = step["agree_new_below"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise CascadeConfigError(f"{where}: agree_new_below must be a finite number, got {value!r}")
            clean["agree_with"], clean["agree_new_below"] = str(step["agree_with"]), float(value)
        overrides = [k for k in ("override_above", "override_at_or_above") if k in clean]
        if i == 0 and overrides:
            raise CascadeConfigError(f"{where}: the first step defines the initial label; {overrides} has no meaning")
        if len(overrides) > 1:
            raise CascadeConfigError(f"{where}: give override_above or override_at_or_above, not both")
        if i > 0 and len(clean) == 1:
            raise CascadeConfigError(f"{where}: a later step needs new_below and/or an override threshold")
        if overrides and "new_below" in clean and clean[overrides[0]] < clean["new_below"]:
            raise CascadeConfigError(f"{where}: {overrides[0]} ({clean[overrides[0]]}) is below new_below "
                                     f"({clean['new_below']}); the two ranges would overlap")  # fmt: skip
        out.append(clean)
    return out


def _source_table(name: str, df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in SOURCE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"cascade source {name!r} lacks column(s) {missing}; expected {list(SOURCE_COLUMNS)}, "
                         f"got {list(df.columns)}")  # fmt: skip
    dup = df["image_id"][df["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"cascade source {name!r} has {len(dup)} duplicated image_id(s), e.g. {dup.iloc[0]!r}")
    table = df[list(SOURCE_COLUMNS)].copy()
    table["image_id"] = table["image_id"].astype(str)
    table["top_identity"] = table["top_identity"].fillna("").astype(str)
    table["top_score"] = pd.to_numeric(table["top_score"], errors="coerce").astype(float)
    return table


def run_cascade(steps: Sequence[Mapping[str, Any]], sources: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Apply ``steps`` in order to the ``sources`` predictions; returns ``DataFrame(image_id, identity, decided_by)``.

    See the module docstring for the step kinds. Every source a step names must be in ``sources``.
    """
    steps = validate_steps(steps)
    names = {s["source"] for s in steps} | {s["agree_with"] for s in steps if "agree_with" in s}
    absent = sorted(names - set(sources))
    if absent:
        raise ValueError(f"cascade steps name source(s) {absent} that were not given; given: {sorted(sources)}")
    tables = {name: _source_table(name, sources[name]) for name in names}

    first = steps[0]
    base = tables[first["source"]]
    image_ids = base["image_id"].to_numpy(dtype=object)
    top_id, score = base["top_identity"].to_numpy(dtype=object), base["top_score"].to_numpy(float)
    is_new = (top_id == "") | ~np.isfinite(score)
    if "agree_with" in first:
        other = tables[first["agree_with"]].set_index("image_id").reindex(image_ids)
        agree = other["top_identity"].fillna("").to_numpy(dtype=object) == top_id
        agree &= np.isfinite(other["top_score"].to_numpy(float))
        is_new |= score < np.where(agree, first["agree_new_below"], first["new_below"])
        logger.info("cascade step 1: %s agrees with %s on %d of %d images", first["agree_with"], first["source"],
                    int(agree.sum()), len(agree))  # fmt: skip
    elif "new_below" in first:
        is_new |= score < first["new_below"]
    identity = np.where(is_new, NEW_INDIVIDUAL, top_id).astype(object)
    decided_by = np.where(is_new, f"{first['source']}:new", f"{first['source']}:label").astype(object)
    logger.info("cascade step 1 (%s): %d images, %d new", first["source"], len(identity), int(is_new.sum()))

    for n, step in enumerate(steps[1:], start=2):
        table = tables[step["source"]].set_index("image_id").reindex(image_ids)
        s_id = table["top_identity"].fillna("").to_numpy(dtype=object)
        s_score = table["top_score"].to_numpy(float)
        known = np.isfinite(s_score)
        override = np.zeros(len(image_ids), bool)
        if "override_above" in step:
            override = known & (s_score > step["override_above"]) & (s_id != "")
        elif "override_at_or_above" in step:
            override = known & (s_score >= step["override_at_or_above"]) & (s_id != "")
        new = known & ~override & (s_score < step["new_below"]) if "new_below" in step else np.zeros_like(override)
        identity[override] = s_id[override]
        decided_by[override] = f"{step['source']}:override"
        identity[new] = NEW_INDIVIDUAL
        decided_by[new] = f"{step['source']}:new"
        logger.info("cascade step %d (%s): %d overridden, %d set new, %d without a score",
                    n, step["source"], int(override.sum()), int(new.sum()), int((~known).sum()))  # fmt: skip
    return pd.DataFrame({"image_id": image_ids, "identity": identity, "decided_by": decided_by})


def resolve_auto(steps: Sequence[Mapping[str, Any]], thresholds: Mapping[str, float]) -> list[dict[str, Any]]:
    """``steps`` with every ``auto`` threshold replaced by ``thresholds[source]`` (the stage's own threshold)."""
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            raise CascadeConfigError(f"cascade step {i + 1} ({step!r}): must be a mapping")
        clean = dict(step)
        for key in THRESHOLD_KEYS:
            if clean.get(key) == AUTO:
                source = clean.get("source")
                if source not in thresholds:
                    raise CascadeConfigError(f"cascade step {i + 1} ({step!r}): {key}: auto needs the threshold "
                                             f"of {source!r}; given: {sorted(thresholds)}")  # fmt: skip
                clean[key] = float(thresholds[source])
        out.append(clean)
    return out


def run(args: argparse.Namespace) -> None:
    """The cascade of one dataset: its steps (``auto``: chosen on the gallery), predictions and choice."""

    raw = json.loads(args.steps)
    thresholds = {
        name: float(read_json(path)["threshold"]) for name, path in named_paths(args.threshold, "threshold").items()
    }
    if raw == AUTO:
        pseudo = {name: pd.read_parquet(path) for name, path in named_paths(args.pseudo, "pseudo").items()}
        chosen, choice = choose_cascade(pseudo, **json.loads(args.search))
        if len(chosen) == 1 and set(chosen[0]) <= {"source", "new_below"} and chosen[0]["source"] in thresholds:
            # A single stage is that stage, at its own threshold (tuned the same way on the same splits).
            chosen = [{"source": chosen[0]["source"], "new_below": thresholds[chosen[0]["source"]]}]
            choice["single_stage_at_its_own_threshold"] = True
        steps = validate_steps(chosen)
        choice = {"dataset": args.dataset, "mode": AUTO, **choice, "steps": steps}
    else:
        steps = validate_steps(resolve_auto(raw, thresholds))
        choice = {"dataset": args.dataset, "mode": "config", "steps": steps}
    logger.info("%s: cascade %s", args.dataset, json.dumps(steps))
    if args.choice:
        write_json(choice, args.choice)
    sources = {name: read_tsv(path) for name, path in named_paths(args.source, "source").items()}
    out = run_cascade(steps, sources)
    tables = {name: _source_table(name, df).set_index("image_id") for name, df in sources.items()}
    decider = out["decided_by"].str.split(":").str[0]
    top_identity = np.empty(len(out), dtype=object)
    top_score = np.full(len(out), np.nan)
    for name in decider.unique():
        rows = (decider == name).to_numpy()
        table = tables[name].reindex(out["image_id"][rows])
        top_identity[rows] = table["top_identity"].fillna("").to_numpy(dtype=object)
        top_score[rows] = table["top_score"].to_numpy(float)
    out.insert(2, "top_identity", top_identity)
    out.insert(3, "top_score", top_score)
    counts = out["decided_by"].value_counts().to_dict()
    logger.info("%s: %d queries, decided by %s", args.dataset, len(out), counts)
    write_tsv(out, args.predictions)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(
        __doc__, arg("--steps", required=True, help='JSON list of cascade steps, or "auto"'),
        arg("--pseudo", nargs="*", default=[], help="NAME=pseudo.parquet of each source (for auto)"),
        arg("--search", default="{}", help="JSON keyword arguments of cascade_auto.choose_cascade"),
        arg("--choice", help="choice.json: the steps used and, for auto, their simulated scores"), "dataset",
        arg("--source", nargs="+", required=True, help="NAME=predictions.tsv of each source"),
        arg("--threshold", nargs="*", default=[], required=False, help="NAME=threshold.json (for auto thresholds)"),
        "predictions log",
    )  # fmt: skip
    run_stage(parser, argv, run)


if __name__ == "__main__":
    main()
