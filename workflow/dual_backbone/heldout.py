"""Held-out scores of the frozen-mode dual-backbone similarity: never judged on images it was trained on.

Held-out use of a similarity trained on the gallery:

* ``pseudo.parquet`` (:func:`pseudo_runs`): for each simulated open-set split of the gallery
  (:func:`workflow.thresholds.simulate_open_set_split`, the splits of ``threshold_tuning``) a head is trained on
  that split's pseudo-gallery only and scores its pseudo-queries; the ``auto`` threshold of the stage is tuned
  on the same per-split models, so no source is judged on images it was trained on.
* ``pairs`` (:func:`heldout_pair_scores`): a raw score for each shortlist pair, a WildFusion source named
  ``trained``. Query pairs are scored by the stage's model; each gallery pair (``a``, ``b``) is scored by a
  fold model trained without the individuals of ``a``'s fold (``folds`` folds of the gallery individuals), so
  the isotonic calibrator fitted on gallery pairs sees the similarity of an individual the head never saw
  (conservative for known queries, exact for new ones) instead of the optimistic similarity of training pairs.
  The stage's model, trained on the whole gallery, scores every pair higher than the fold models do; given the
  frozen features of the query images, its query-pair scores are quantile-mapped onto the fold models' scores of
  the same pairs (:func:`workflow.score_scale.quantile_map`), the scale the calibrator was fitted on.

Inputs: the gallery's cached views ``[G x V x sum(D)]`` (:func:`workflow.dual_backbone.frozen.table_views`), its
identities and image ids, the frozen settings and ``threshold_tuning``; for ``pairs`` a shortlist.
Outputs: ``pseudo.parquet`` tables (:data:`workflow.thresholds.PSEUDO_COLUMNS`) and ``query, candidate, score``
pair tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from workflow.dual_backbone.frozen import (
    fit_on_rows,
    is_frozen_model,
    load_frozen_model,
    project,
    resolve_frozen,
    table_views,
)
from workflow.dual_backbone.train import DEFAULT_TRAINING
from workflow.faiss_search import topk_inner_product
from workflow.score_scale import quantile_map
from workflow.thresholds import PSEUDO_COLUMNS, simulate_open_set_split

logger = logging.getLogger(__name__)


def pseudo_runs(
    views: np.ndarray,
    identities: np.ndarray,
    image_ids: np.ndarray,
    dims,
    cfg,
    head_cfg,
    tuning: Mapping[str, Any],
    queries: np.ndarray | None = None,
    query_scores: list[np.ndarray] | None = None,
) -> pd.DataFrame:
    """``pseudo.parquet`` rows of the gallery (``views: [N x V x sum(D)]``): one retrained head per open-set split.

    With ``queries`` (view 0 of the real queries, ``[Q x sum(D)]``) and a list ``query_scores``, each split's head
    also scores the real queries against the whole gallery and appends their top ``(cos + 1) / 2`` (``[Q]``) to
    ``query_scores``: the scale of the split heads, for :func:`workflow.score_scale.quantile_map`.

    The splits are ``simulate_open_set_split(identities, new_fraction, query_fraction, rng)`` drawn
    ``repeats`` times from ``np.random.default_rng(seed)`` (``tuning`` = config ``threshold_tuning``), exactly as
    :func:`workflow.thresholds.tune_threshold` draws them. Each head is trained on the split's pseudo-gallery only;
    a pseudo-query's ``identity`` is its nearest pseudo-gallery image's and ``score`` is ``(cos + 1) / 2``.
    """
    identities = np.asarray(identities, dtype=object)
    rng = np.random.default_rng(int(tuning["seed"]))
    frames = []
    for r in range(int(tuning["repeats"])):
        split = simulate_open_set_split(identities, float(tuning["new_fraction"]), float(tuning["query_fraction"]), rng)
        t0 = time.perf_counter()
        model = fit_on_rows(views, identities, split.gallery, dims, cfg, head_cfg, seed=r)
        q, g = project(model, views[split.query, 0]), project(model, views[split.gallery, 0])
        idx, cos = topk_inner_product(q, g, 1)
        found = idx.shape[1] > 0
        if queries is not None and query_scores is not None and len(queries):
            _, qcos = topk_inner_product(project(model, queries), project(model, views[:, 0]), 1)
            query_scores.append((np.clip(qcos[:, 0], -1, 1) + 1) / 2)
        frames.append(
            pd.DataFrame(
                {
                    "split": r,
                    "image_id": np.asarray(image_ids, dtype=object)[split.query].astype(str),
                    "identity": identities[split.gallery][idx[:, 0]].astype(str) if found else "",
                    "score": (np.clip(cos[:, 0], -1, 1) + 1) / 2 if found else -np.inf,
                    "truth": identities[split.query].astype(str),
                    "is_new": split.is_new,
                }
            )
        )
        logger.info("pseudo split %d: head trained on %d pseudo-gallery images in %.1f s", r, len(split.gallery),
                    time.perf_counter() - t0)  # fmt: skip
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PSEUDO_COLUMNS)
    return out.astype({"split": int, "image_id": str, "identity": str, "score": float, "truth": str, "is_new": bool})


def pseudo_scorer(pseudo: pd.DataFrame, image_ids: np.ndarray):
    """A :data:`workflow.thresholds.Scorer` that replays :func:`pseudo_runs` (called in the same split order)."""
    pos = {str(i): n for n, i in enumerate(image_ids)}
    runs = [g for _, g in pseudo.groupby("split", sort=True)]
    calls = iter(range(len(runs)))

    def scorer(query_idx: np.ndarray, gallery_idx: np.ndarray):
        run = runs[next(calls)]
        if [pos[i] for i in run["image_id"]] != list(np.asarray(query_idx)):
            raise RuntimeError("pseudo_scorer: the tuning splits differ from the pseudo splits (seed or repeats)")
        return run["identity"].to_numpy(dtype=object), run["score"].to_numpy(float)

    return scorer


def abstaining_pseudo(identities: np.ndarray, image_ids: np.ndarray, tuning: Mapping[str, Any]) -> pd.DataFrame:
    """``pseudo.parquet`` of a source that cannot be judged without its training images (the fine-tuned model):
    the same splits, ``identity`` ``""`` and ``score`` ``-inf`` for every pseudo-query."""
    identities = np.asarray(identities, dtype=object)
    rng = np.random.default_rng(int(tuning["seed"]))
    frames = []
    for r in range(int(tuning["repeats"])):
        s = simulate_open_set_split(identities, float(tuning["new_fraction"]), float(tuning["query_fraction"]), rng)
        frames.append(pd.DataFrame({"split": r, "image_id": np.asarray(image_ids, dtype=object)[s.query].astype(str),
                                    "identity": "", "score": -np.inf, "truth": identities[s.query].astype(str),
                                    "is_new": s.is_new}))  # fmt: skip
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PSEUDO_COLUMNS)
    return out.astype({"split": int, "image_id": str, "identity": str, "score": float, "truth": str, "is_new": bool})


def fold_of_individuals(identities: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold ``0 .. folds-1`` of each row, the same for every image of an individual (individuals shuffled)."""
    individuals = np.array(sorted(set(np.asarray(identities, dtype=object))), dtype=object)
    order = np.random.default_rng(seed).permutation(len(individuals))
    fold = {individuals[j]: n % folds for n, j in enumerate(order)}
    return np.array([fold[i] for i in identities], np.int64)


def heldout_pair_scores(
    pairs: pd.DataFrame,
    image_ids: np.ndarray,
    embeddings: np.ndarray,
    gallery_rows: np.ndarray,
    gallery_views: np.ndarray,
    gallery_identities: np.ndarray,
    dims,
    cfg,
    head_cfg,
    seed: int = 0,
    features: np.ndarray | None = None,
) -> pd.DataFrame:
    """Raw ``trained`` score (cosine) of every shortlist pair: ``query, candidate, score``.

    ``embeddings: [N x P]`` are the stage model's (rows of ``image_ids``) and score the query pairs.
    ``gallery_views: [G x V x sum(D)]`` are the gallery's cached views (rows ``gallery_rows`` of ``image_ids``):
    gallery pair ``(a, b)`` is scored by the fold model trained without ``a``'s fold of individuals (see the
    module docstring), which is what the calibrator is fitted on. With ``features: [N x sum(D)]`` (view 0 of every
    row of ``image_ids``) every fold model also scores the query pairs, and the stage model's query-pair scores are
    quantile-mapped onto those (ranks kept, scale of the calibrator's pairs).
    """
    cfg = resolve_frozen(cfg)
    row = {str(i): n for n, i in enumerate(image_ids)}
    q = pairs["query"].astype(str).map(row).to_numpy()
    c = pairs["candidate"].astype(str).map(row).to_numpy()
    if np.isnan(q.astype(float)).any() or np.isnan(c.astype(float)).any():
        raise ValueError("shortlist pairs name images that are not in the metadata table")
    score = np.einsum("ij,ij->i", embeddings[q.astype(int)], embeddings[c.astype(int)]).astype(np.float64)
    is_gal = (pairs["kind"] == "gallery").to_numpy()
    gpos = {int(r): n for n, r in enumerate(gallery_rows)}
    folds = fold_of_individuals(gallery_identities, int(cfg["folds"]), seed)
    qg = np.array([gpos[int(v)] for v in q[is_gal]], np.int64)
    cg = np.array([gpos[int(v)] for v in c[is_gal]], np.int64)
    gscore = np.full(len(qg), np.nan)
    qq, qc = q[~is_gal].astype(int), c[~is_gal].astype(int)
    fold_query_scores = []
    for f in range(int(cfg["folds"])):
        held = folds == f
        t0 = time.perf_counter()
        model = fit_on_rows(gallery_views, gallery_identities, np.flatnonzero(~held), dims, cfg, head_cfg, seed + f)
        emb = project(model, gallery_views[:, 0])
        sel = held[qg]
        gscore[sel] = np.einsum("ij,ij->i", emb[qg[sel]], emb[cg[sel]])
        if features is not None and len(qq):
            femb = project(model, features)
            fold_query_scores.append(np.einsum("ij,ij->i", femb[qq], femb[qc]))
        logger.info("fold %d: %d held-out gallery images, %d pairs scored, %.1f s", f, int(held.sum()),
                    int(sel.sum()), time.perf_counter() - t0)  # fmt: skip
    score[is_gal] = gscore
    if fold_query_scores:
        raw_median = float(np.median(score[~is_gal]))
        score[~is_gal] = quantile_map(score[~is_gal], np.concatenate(fold_query_scores))
        logger.info("query-pair scores quantile-mapped onto the %d fold models' scale: median %.4f -> %.4f",
                    len(fold_query_scores), raw_median, float(np.median(score[~is_gal])))  # fmt: skip
    return pd.DataFrame({"query": pairs["query"].astype(str), "candidate": pairs["candidate"].astype(str),
                         "score": score})  # fmt: skip


def shortlist_pair_scores(model_path: str, meta: pd.DataFrame, pairs: pd.DataFrame, cache: str, device: str):
    """``pairs`` (held-out raw scores of the shortlist pairs, WildFusion source ``trained``) of a frozen-mode model:
    query pairs by the model, gallery pairs by fold models (:func:`heldout_pair_scores`)."""
    if not is_frozen_model(model_path):
        raise ValueError(f"{model_path}: the 'trained' fusion source needs dual_backbone.mode: frozen")
    model, _, _, settings = load_frozen_model(model_path)
    features = table_views(meta, settings, 1, cache, device)[:, 0]
    emb = project(model, features)
    is_gal = (meta["split"] == "database").to_numpy()
    gal = meta[is_gal].reset_index(drop=True)
    gviews = table_views(gal, settings, int(settings["frozen"]["views"]), cache, device)
    return heldout_pair_scores(pairs, meta["image_id"].astype(str).to_numpy(), emb, np.flatnonzero(is_gal), gviews,
                               gal["identity"].to_numpy(dtype=object), settings["dims"], settings["frozen"],
                               settings["head"], int({**DEFAULT_TRAINING, **settings["training"]}["seed"]),
                               features)  # fmt: skip
