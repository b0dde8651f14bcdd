"""What every stage that scores shortlisted (query, gallery image) pairs shares: WildFusion, re-ranking, the
gallery-free discovery pairs and the benchmarks that replay them.

``pairs`` is a shortlist table (:func:`workflow.shortlist.read_pairs`: ``query, candidate, kind, cosine``, ``kind``
one of ``query`` / ``gallery``); ``score: [P]`` one score per row of it, higher = more similar. From those:
the raw score of each source per pair (:func:`source_scores`), each query's best candidate
(:func:`predict_queries`), the stage's predictions with their threshold (:func:`predict_stage`, ``auto`` tuned on
the gallery pairs only), and its answers on simulated open-set splits of the gallery (:func:`pseudo_pairs_table`,
:func:`simulated_scores`). No query truth is read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workflow.thresholds import (
    apply_threshold,
    choose_threshold,
    pair_scorer,
    pseudo_split_scores,
    scorer_pseudo_table,
    top_per_source,
)

COSINE = "cosine"  # the global cosine of the pair, a source of every pair stage


def source_scores(pairs: pd.DataFrame, shards: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Raw score columns (``cosine`` plus one per matcher) aligned to the rows of ``pairs``; NaN = not scored."""
    out = pd.DataFrame({COSINE: pairs["cosine"].to_numpy(np.float64)}, index=pairs.index)
    for name, table in sorted(shards.items()):
        dup = table.duplicated(["query", "candidate"])
        if dup.any():
            raise ValueError(
                f"matcher {name!r}: pair {tuple(table.loc[dup, ['query', 'candidate']].iloc[0])} scored twice"
            )
        merged = pairs[["query", "candidate"]].merge(table, on=["query", "candidate"], how="left")
        out[name] = merged["score"].to_numpy(np.float64)
    return out


def gallery_labels(pairs: pd.DataFrame, identity: dict) -> np.ndarray:
    """1 where both images of a pair show the same individual."""
    return (pairs["query"].map(identity) == pairs["candidate"].map(identity)).to_numpy(np.float64)


def predict_queries(pairs: pd.DataFrame, score: np.ndarray, query_ids: np.ndarray, identity: dict) -> pd.DataFrame:
    """Best candidate of each query: ``image_id, top_identity, top_score`` (``-inf`` without candidates)."""
    pos = {q: i for i, q in enumerate(query_ids)}
    src = pairs["query"].map(pos).to_numpy()
    rows, best = top_per_source(src, np.asarray(score, float), len(query_ids))
    cand = pairs["candidate"].to_numpy(dtype=object)
    top_identity = np.array([identity[cand[r]] if r >= 0 else "" for r in rows], dtype=object)
    return pd.DataFrame({"image_id": query_ids, "top_identity": top_identity, "top_score": best})


def gallery_scorer(meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray):
    """A :data:`workflow.thresholds.Scorer` over the gallery pairs of ``pairs`` scored by ``score: [P]``.

    Returns ``(scorer, gallery image ids [G], gallery identities [G])`` in table order.
    """
    gal = meta[meta["split"] == "database"]
    gal_ids = gal["image_id"].to_numpy(dtype=object)
    gal_identities = gal["identity"].to_numpy(dtype=object)
    gpos = {g: i for i, g in enumerate(gal_ids)}
    is_g = (pairs["kind"] != "query").to_numpy()
    gp = pairs[is_g]
    scorer = pair_scorer(gp["query"].map(gpos).to_numpy(), gp["candidate"].map(gpos).to_numpy(),
                         np.asarray(score, np.float64)[is_g], gal_identities)  # fmt: skip
    return scorer, gal_ids, gal_identities


def pseudo_pairs_table(meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, tuning: dict) -> pd.DataFrame:
    """The stage's ``pseudo.parquet`` (:func:`workflow.thresholds.scorer_pseudo_table`) from its pair scores."""
    scorer, gal_ids, gal_identities = gallery_scorer(meta, pairs, score)
    return scorer_pseudo_table(scorer, gal_ids, gal_identities, tuning)


def predict_stage(
    meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, threshold_setting, tuning: dict, dataset: str
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Predictions of a pair-scoring stage (WildFusion and the later stages that rescore its pairs)."""
    identity = dict(zip(meta["image_id"], meta["identity"]))
    qry_ids = meta.loc[meta["split"] == "query", "image_id"].to_numpy(dtype=object)
    is_q = (pairs["kind"] == "query").to_numpy()
    preds = predict_queries(pairs[is_q], score[is_q], qry_ids, identity)
    scorer, _, gal_identities = gallery_scorer(meta, pairs, score)
    threshold, info, curve = choose_threshold(threshold_setting, dataset, scorer, gal_identities, tuning)
    preds.insert(
        1, "identity", apply_threshold(preds["top_identity"].to_numpy(), preds["top_score"].to_numpy(), threshold)
    )
    return preds, info, curve


def simulated_scores(meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, tuning: dict) -> np.ndarray:
    """Per-split simulated open-set scores ``[S]`` of the pair scores ``score: [P]`` at their robust threshold
    (:func:`workflow.thresholds.pseudo_split_scores`) on the gallery's simulated splits (gallery pairs only)."""
    return pseudo_split_scores(pseudo_pairs_table(meta, pairs, score, tuning), int(tuning["grid_size"]))[0]
