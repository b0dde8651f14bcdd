"""The registry of stages: one place that names every stage and what the others may assume about it.

Every stage writes ``results/stages/<stage>/<dataset>/predictions.tsv`` (``image_id, identity, top_identity,
top_score``). What differs between stages, and what the rules, the cascade and the config checks read here:

``scale``
    the range of ``top_score``: ``cosine`` ([-1, 1], the nearest gallery image's cosine) or ``probability``
    ([0, 1]); a cascade threshold is written on this scale.
``pair_score``
    for a stage that scores shortlisted (query, gallery image) pairs, the column of its pair table that holds the
    score (``None`` for the others); XGBoost's gate reads it from its base stage.
``simulated``
    the stage writes ``pseudo.parquet``: its answers on simulated open-set splits of the gallery, which ``auto``
    thresholds and ``cascade: auto`` read.
``combines``
    the stage combines other stages' answers (cascade, discovery) and is not a cascade source.

The order of :data:`STAGES` is the order of simplicity: among choices that the gallery's simulated splits cannot
separate, the earlier (simpler) stage wins (:mod:`workflow.cascade_auto`). ``config/schema.yaml`` spells the names
out in its enums; ``tests/test_config.py`` checks they are these.
"""

from __future__ import annotations

from dataclasses import dataclass

COSINE = "cosine"
PROBABILITY = "probability"


@dataclass(frozen=True)
class Stage:
    """What the rest of the workflow may assume about one stage (see the module docstring)."""

    name: str
    scale: str
    pair_score: str | None = None
    simulated: bool = True
    combines: bool = False


STAGES: tuple[Stage, ...] = (
    Stage("baseline", COSINE),
    Stage("wildfusion", PROBABILITY, pair_score="fused"),
    Stage("rerank", PROBABILITY, pair_score="rerank"),
    Stage("xgboost", PROBABILITY),
    Stage("dual_backbone", PROBABILITY),
    Stage("cascade", PROBABILITY, simulated=False, combines=True),
    Stage("discovery", PROBABILITY, simulated=False, combines=True),
)
BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}

SOURCES: tuple[str, ...] = tuple(s.name for s in STAGES if not s.combines)
"""Stages whose predictions a cascade step may name, simplest first."""

SIMULATED: tuple[str, ...] = tuple(s.name for s in STAGES if s.simulated)
"""Stages that write ``pseudo.parquet``: those whose threshold may be ``auto`` and that ``cascade: auto`` weighs."""

PAIR_STAGES: dict[str, str] = {s.name: s.pair_score for s in STAGES if s.pair_score}
"""Pair-scoring stages and the column of their pair score (the stages XGBoost's gate may sit on)."""

SUBMITTABLE: tuple[str, ...] = tuple(s.name for s in STAGES if s.name != "discovery")
"""Stages whose predictions can be the submission (``submission.stage``) or anchor discovery."""
