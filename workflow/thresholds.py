"""Open-set thresholds: fixed values from config, or ``auto`` (tuned without the query truth).

``auto`` simulates the open-set task on the gallery alone: some gallery individuals are held out as
pseudo-new (all their images become pseudo-queries), one or more images of some remaining individuals
become pseudo-known queries, and the rest is the pseudo-gallery. A stage's scorer predicts the top
identity and its score for each pseudo-query against the pseudo-gallery, and the threshold in the middle of the
plateau of ``sqrt(BAKS * BAUS)`` averaged over several random splits is chosen (:mod:`workflow.robust`).
Every stage reuses this through :func:`tune_threshold` with its own scorer.

The same splits (:func:`pseudo_splits`: ``threshold_tuning.repeats`` draws from one generator seeded with
``threshold_tuning.seed``) also give every source stage's ``pseudo.parquet`` (:func:`pseudo_table`,
:data:`PSEUDO_COLUMNS`): each pseudo-query's predicted top identity and top score on every split, which the
``auto`` choices (re-ranking on or off, the cascade) compare without reading the query truth. Split ``i`` is
the same split in every stage's table (and in :func:`tune_threshold`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.metrics import score_predictions
from workflow.robust import PlateauPick, plateau_pick

logger = logging.getLogger(__name__)

# scorer(query_idx [Q], gallery_idx [G]) -> (predicted identity [Q], top score [Q])
Scorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
CURVE_COLUMNS = ["threshold", "BAKS", "BAUS", "score", "new_share"]
# One row per (split, pseudo-query): the stage's top identity ("" if none) and top score (-inf if none).
PSEUDO_COLUMNS = ["split", "image_id", "identity", "score", "truth", "is_new"]
# Keys of ``threshold_tuning`` that tune_threshold takes (trained_repeats only sizes trained sources' tables).
TUNING_KEYS = ("new_fraction", "query_fraction", "repeats", "grid_size", "seed")


@dataclass(frozen=True)
class OpenSetSplit:
    """Indices into the gallery for one simulated open-set split."""

    query: np.ndarray  # [Q] pseudo-query rows
    gallery: np.ndarray  # [G] pseudo-gallery rows
    is_new: np.ndarray  # [Q] True where the pseudo-query's individual is held out


def simulate_open_set_split(
    identities: np.ndarray, new_fraction: float, query_fraction: float, rng: np.random.Generator
) -> OpenSetSplit:
    """Split gallery rows (``identities: [N]``) into a pseudo-query and a pseudo-gallery.

    ``new_fraction`` of the individuals (at least one, never all) go to the pseudo-query entirely;
    of each remaining individual with two or more images, ``query_fraction`` of its images (at least
    one, always leaving one) become pseudo-known queries.
    """
    identities = np.asarray(identities, dtype=object)
    individuals = np.array(sorted(set(identities)), dtype=object)
    if len(individuals) < 2:
        raise ValueError(f"need at least 2 gallery individuals to simulate an open-set split, got {len(individuals)}")
    n_new = int(np.clip(round(new_fraction * len(individuals)), 1, len(individuals) - 1))
    new_ids = set(rng.choice(individuals, size=n_new, replace=False))
    query, gallery, is_new = [], [], []
    for ident in individuals:
        rows = np.flatnonzero(identities == ident)
        if ident in new_ids:
            query.extend(rows)
            is_new.extend([True] * len(rows))
            continue
        rows = rng.permutation(rows)
        n_query = int(min(len(rows) - 1, max(1, round(query_fraction * len(rows))))) if len(rows) > 1 else 0
        query.extend(rows[:n_query])
        is_new.extend([False] * n_query)
        gallery.extend(rows[n_query:])
    return OpenSetSplit(np.asarray(query, int), np.asarray(gallery, int), np.asarray(is_new, bool))


def threshold_curve(
    top_identity: np.ndarray, top_score: np.ndarray, true_identity: np.ndarray, is_new: np.ndarray, grid: np.ndarray
) -> pd.DataFrame:
    """Score (and BAKS, BAUS, new share) of ``predict new below t`` for every ``t`` in ``grid``."""
    rows = []
    for t in grid:
        pred = np.where(top_score >= t, top_identity, NEW_INDIVIDUAL)
        rows.append({"threshold": float(t), **score_predictions(true_identity, pred, is_new)})
    return pd.DataFrame(rows)


def threshold_grid(scores: np.ndarray, grid_size: int) -> np.ndarray:
    """Candidate thresholds: quantiles of the finite ``scores``, plus one above the highest ("everything new")."""
    pooled = np.asarray(scores, np.float64)
    pooled = pooled[np.isfinite(pooled)]
    if len(pooled) == 0:
        raise ValueError("the scorer returned no finite score on the simulated split")
    grid = np.unique(np.quantile(pooled, np.linspace(0, 1, grid_size)))
    return np.concatenate([grid, [np.nextafter(grid[-1], np.inf)]])


def pick_on_curves(curves: list[pd.DataFrame]) -> tuple[pd.DataFrame, PlateauPick]:
    """The mean curve of per-split curves on one grid and its robust threshold (:func:`plateau_pick`)."""
    per_split = np.stack([c["score"].to_numpy(np.float64) for c in curves])
    curve = pd.concat(curves).groupby("threshold", as_index=False, sort=True).mean(numeric_only=True)
    return curve, plateau_pick(curves[0]["threshold"].to_numpy(np.float64), per_split)


def tune_threshold(
    scorer: Scorer,
    identities: np.ndarray,
    *,
    new_fraction: float = 0.33,
    query_fraction: float = 0.3,
    repeats: int = 5,
    grid_size: int = 101,
    seed: int = 0,
) -> tuple[float, pd.DataFrame, PlateauPick]:
    """Tune a threshold for ``scorer`` on simulated open-set splits of the gallery.

    Returns the threshold, the curve (mean over repeats) of score, BAKS, BAUS and new share versus threshold,
    which the report plots, and how the threshold was picked (:func:`workflow.robust.plateau_pick`).
    """
    identities = np.asarray(identities, dtype=object)
    runs = []
    tuning = {"new_fraction": new_fraction, "query_fraction": query_fraction, "seed": seed}
    for split in pseudo_splits(identities, tuning, repeats):
        top_id, top_score = scorer(split.query, split.gallery)
        runs.append((np.asarray(top_id, object), np.asarray(top_score, float), identities[split.query], split.is_new))
    grid = threshold_grid(np.concatenate([r[1] for r in runs]), grid_size)
    curve, pick = pick_on_curves([threshold_curve(*run, grid) for run in runs])
    best = curve.iloc[pick.index]
    logger.info(
        "auto threshold %.4f: simulated score %.3f (BAKS %.3f, BAUS %.3f, new share %.2f) over %d split(s); "
        "plateau %.4f..%.4f within %.4f of the best %.3f",
        pick.threshold, best["score"], best["BAKS"], best["BAUS"], best["new_share"], repeats, *pick.plateau,
        pick.tolerance, pick.best_score,
    )  # fmt: skip
    return pick.threshold, curve, pick


def resolve_threshold(setting, dataset: str) -> float | str:
    """Per-dataset threshold setting: a number, ``"auto"``, or a mapping with ``default``."""
    if isinstance(setting, dict):
        setting = setting.get(dataset, setting.get("default", "auto"))
    if setting == "auto":
        return "auto"
    try:
        return float(setting)
    except (TypeError, ValueError):
        raise ValueError(f"threshold for dataset {dataset!r} must be a number or 'auto', got {setting!r}") from None


def apply_threshold(top_identity: np.ndarray, top_score: np.ndarray, threshold: float) -> np.ndarray:
    """``new_individual`` where the top score is below ``threshold``, else the top identity."""
    return np.where(np.asarray(top_score) >= threshold, np.asarray(top_identity, object), NEW_INDIVIDUAL)


def top_per_source(source: np.ndarray, score: np.ndarray, n_sources: int) -> tuple[np.ndarray, np.ndarray]:
    """Row of the best-scoring pair of each source ``0..n_sources-1`` (-1 where it has none), and its score."""
    best_row = np.full(n_sources, -1, dtype=np.int64)
    best_score = np.full(n_sources, -np.inf)
    finite = np.isfinite(score)
    order = np.lexsort((-np.where(finite, score, -np.inf), source))  # by source, best score first
    first = np.ones(len(order), bool)
    first[1:] = source[order][1:] != source[order][:-1]
    rows = order[first]
    best_row[source[rows]] = rows
    best_score[source[rows]] = np.where(finite[rows], score[rows], -np.inf)
    return best_row, best_score


def pair_scorer(source: np.ndarray, candidate: np.ndarray, score: np.ndarray, identities: np.ndarray) -> Scorer:
    """A :data:`Scorer` over sparse gallery x gallery pair scores (``[P]`` row indices into the gallery).

    A pseudo-query whose candidates all left the pseudo-gallery gets score ``-inf`` (predicted new).
    """
    source, candidate = np.asarray(source, np.int64), np.asarray(candidate, np.int64)
    score = np.asarray(score, np.float64)
    identities = np.asarray(identities, dtype=object)

    def scorer(query_idx: np.ndarray, gallery_idx: np.ndarray):
        n = len(identities)
        in_query, in_gallery = np.zeros(n, bool), np.zeros(n, bool)
        in_query[query_idx], in_gallery[gallery_idx] = True, True
        keep = in_query[source] & in_gallery[candidate]
        rows, best = top_per_source(source[keep], score[keep], n)
        cand = candidate[keep]
        top_id = np.where(rows >= 0, identities[cand[np.maximum(rows, 0)]] if keep.any() else "", "")
        return top_id[query_idx].astype(object), best[query_idx]

    return scorer


def choose_threshold(
    setting, dataset: str, scorer: Scorer, identities: np.ndarray, tuning: dict
) -> tuple[float, dict, pd.DataFrame]:
    """The threshold of one stage on one dataset: fixed from config, or ``auto`` via :func:`tune_threshold`.

    Returns the threshold, a JSON-ready description of how it was chosen, and the tuning curve (empty when
    the threshold is fixed). ``scorer`` runs only for ``auto``.
    """
    setting = resolve_threshold(setting, dataset)
    if setting != "auto":
        return setting, {"threshold": setting, "source": "config"}, pd.DataFrame(columns=CURVE_COLUMNS)
    threshold, curve, pick = tune_threshold(
        scorer, identities, **{k: v for k, v in tuning.items() if k in TUNING_KEYS}
    )
    return threshold, {"threshold": threshold, "source": "auto", "tuning": tuning, "choice": pick.report()}, curve


def pseudo_splits(identities: np.ndarray, tuning: dict, repeats: int | None = None) -> list[OpenSetSplit]:
    """The simulated open-set splits of a gallery (``identities: [N]`` in table order) shared by every stage.

    ``[simulate_open_set_split(identities, new_fraction, query_fraction, rng) for _ in range(n)]`` with
    ``rng = np.random.default_rng(seed)`` and ``n = repeats`` (default ``tuning["repeats"]``): the first ``n``
    splits are the same for any larger ``n``, so a trained source may write fewer splits than the others.
    No split with fewer than 2 individuals (the start refuses ``auto`` decisions there: workflow/config_check.py).
    """
    rng = np.random.default_rng(tuning["seed"])
    n = int(tuning["repeats"] if repeats is None else repeats)
    identities = np.asarray(identities, dtype=object)
    if len(set(identities)) < 2:
        return []
    nf, qf = tuning["new_fraction"], tuning["query_fraction"]
    return [simulate_open_set_split(identities, nf, qf, rng) for _ in range(n)]


def pseudo_table(
    splits: list[OpenSetSplit],
    image_ids: np.ndarray,
    identities: np.ndarray,
    predict: Callable[[int, OpenSetSplit], tuple[np.ndarray, np.ndarray]],
) -> pd.DataFrame:
    """A stage's ``pseudo.parquet`` table (:data:`PSEUDO_COLUMNS`) from ``predict(i, split) -> (identity, score)``.

    ``image_ids``/``identities``: ``[N]`` gallery rows that the splits index. ``predict`` must only use the
    split's pseudo-gallery (a trained source trains its auxiliary model there).
    """
    image_ids = np.asarray(image_ids, dtype=object)
    identities = np.asarray(identities, dtype=object)
    parts = []
    for i, split in enumerate(splits):
        top_id, top_score = predict(i, split)
        top_id = np.asarray(top_id, dtype=object)
        top_score = np.asarray(top_score, np.float64)
        empty = pd.isna(top_id) | (top_id == "")
        parts.append(pd.DataFrame({
            "split": np.full(len(split.query), i, np.int64),
            "image_id": image_ids[split.query].astype(str),
            "identity": np.where(empty, "", top_id).astype(str),
            "score": np.where(empty | ~np.isfinite(top_score), -np.inf, top_score),
            "truth": identities[split.query].astype(str),
            "is_new": split.is_new.astype(bool),
        }))  # fmt: skip
    if not parts:
        return pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in zip(PSEUDO_COLUMNS, [np.int64, str, str, float, str, bool])}
        )
    return pd.concat(parts, ignore_index=True)[PSEUDO_COLUMNS]


def scorer_pseudo_table(
    scorer: Scorer, image_ids: np.ndarray, identities: np.ndarray, tuning: dict, repeats: int | None = None
) -> pd.DataFrame:
    """:func:`pseudo_table` of a :data:`Scorer` over the gallery on :func:`pseudo_splits`."""
    splits = pseudo_splits(identities, tuning, repeats)
    return pseudo_table(splits, image_ids, identities, lambda i, s: scorer(s.query, s.gallery))


def pseudo_split_scores(table: pd.DataFrame, grid_size: int = 101) -> tuple[np.ndarray, PlateauPick | None]:
    """Per-split simulated scores ``[S]`` of ``identity if score >= t else new`` at the robust threshold ``t``.

    The same tuning as :func:`tune_threshold`, from a stored pseudo table; ``t`` is picked on the mean curve over
    the splits (:func:`workflow.robust.plateau_pick`), and each split is scored there. A table without a finite
    score predicts every pseudo-query new (``None`` for the pick).
    """
    parts = [part for _, part in table.groupby("split", sort=True)]
    pooled = table["score"].to_numpy(np.float64)
    if not np.isfinite(pooled).any():
        new = [score_predictions(p["truth"].to_numpy(object), np.full(len(p), NEW_INDIVIDUAL, object),
                                 p["is_new"].to_numpy(bool))["score"] for p in parts]  # fmt: skip
        return np.asarray(new, np.float64), None
    grid = threshold_grid(pooled, grid_size)
    curves = [
        threshold_curve(part["identity"].to_numpy(object), part["score"].to_numpy(float),
                        part["truth"].to_numpy(object), part["is_new"].to_numpy(bool), grid)
        for part in parts
    ]  # fmt: skip
    _, pick = pick_on_curves(curves)
    return np.array([c["score"].iloc[pick.index] for c in curves], np.float64), pick
