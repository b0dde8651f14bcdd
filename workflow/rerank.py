"""k-reciprocal re-ranking of the fused WildFusion scores (the paper's step 3, after Zhong et al. 2017).

Inputs
    ``results/data/<dataset>.tsv`` and ``results/stages/wildfusion/<dataset>/pairs.parquet`` (every shortlist
    pair with its fused score: ``kind == query`` for query -> gallery, ``kind == gallery`` for each gallery
    image's ``k_gallery`` other gallery images).
Outputs (``results/stages/rerank/<dataset>/``)
    ``predictions.tsv``, ``threshold.json``, ``threshold_curve.tsv`` as every stage; ``pairs.parquet`` with
    ``query, candidate, kind, wildfusion, jaccard, rerank`` (``rerank`` is the stage's score, read by later
    stages); ``cost.json``: pairs re-ranked, extra pairs matched (always 0) and seconds.

The method, on sparse neighbour lists only (no dense ``N x N`` matrix):

1. A symmetric similarity graph over the dataset's images from the pair table: an edge ``a - b`` for every
   pair in either direction (query x gallery, its transpose gallery x query, and gallery x gallery), with
   the larger fused score where both directions were scored. Query x query pairs do not exist.
2. ``N(i, k)``: the ``k`` best-scoring neighbours of image ``i`` (ties broken by image id).
3. The k-reciprocal set ``R(i) = {i} + {j in N(i, K1) : i in N(j, K2)}`` (the image itself belongs to its own
   set, as in Zhong et al.).
4. ``J(a, b) = |R(a) & R(b)| / |R(a) | R(b)|`` and ``S_final = (1 - lambda) S + lambda J`` on every pair.

The gallery x gallery scores the method needs are the shortlist's own gallery pairs, already matched and
fused by WildFusion: re-ranking matches no extra pair (the paper computed a full gallery x gallery matrix
for the lynx, 38 GPU-hours). Datasets not listed in ``rerank.datasets`` keep the WildFusion scores. With
``rerank.datasets: auto`` re-ranking applies to a dataset when it raises the simulated open-set score on the
gallery (:func:`choose_rerank`; both scores are logged and written to ``cost.json``). With ``--pseudo`` the
stage also writes ``pseudo.parquet`` (:func:`workflow.thresholds.pseudo_table`) of the scores it keeps.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import pandas as pd

from workflow.cli import arg, run_stage, stage_parser
from workflow.pair_stage import predict_stage, pseudo_pairs_table, simulated_scores
from workflow.robust import prefer_simpler
from workflow.stage_io import read_tsv, write_json, write_parquet, write_stage_outputs

logger = logging.getLogger(__name__)


def similarity_edges(pairs: pd.DataFrame, score: np.ndarray) -> pd.DataFrame:
    """Symmetric edge list ``a, b, s`` (both directions, no self-loops, one row per ordered pair).

    ``pairs: [P]`` rows with ``query, candidate``; ``score: [P]``. Where both ``(a, b)`` and ``(b, a)`` were
    scored, both directions get the larger score; NaN scores are dropped.
    """
    score = np.asarray(score, np.float64)
    if len(score) != len(pairs):
        raise ValueError(f"score has {len(score)} values for {len(pairs)} pairs")
    a = pairs["query"].to_numpy(dtype=object)
    b = pairs["candidate"].to_numpy(dtype=object)
    both = pd.DataFrame({"a": np.concatenate([a, b]), "b": np.concatenate([b, a]), "s": np.concatenate([score, score])})
    both = both[(both["a"] != both["b"]) & np.isfinite(both["s"].to_numpy())]
    return both.groupby(["a", "b"], as_index=False, sort=True)["s"].max()


def nearest(edges: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` best edges of every source ``a`` (``a, b, s, rank``; rank 1 is the most similar)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranked = edges.sort_values(["a", "s", "b"], ascending=[True, False, True], kind="stable")
    ranked = ranked.assign(rank=ranked.groupby("a").cumcount() + 1)
    return ranked[ranked["rank"] <= k].reset_index(drop=True)


def reciprocal_sets(edges: pd.DataFrame, k1: int, k2: int) -> pd.DataFrame:
    """Members of every image's k-reciprocal set as rows ``owner, member`` (each owner includes itself).

    ``j`` is in ``R(i)`` when ``j`` is among ``i``'s ``k1`` nearest and ``i`` among ``j``'s ``k2`` nearest.
    """
    n1 = nearest(edges, k1)[["a", "b"]]
    n2 = nearest(edges, k2)[["a", "b"]].rename(columns={"a": "b", "b": "a"})  # (j, i) with i in N(j, k2)
    mutual = n1.merge(n2, on=["a", "b"], how="inner")
    nodes = pd.unique(np.concatenate([edges["a"].to_numpy(dtype=object), edges["b"].to_numpy(dtype=object)]))
    own = pd.DataFrame({"owner": nodes, "member": nodes})
    out = pd.concat([own, mutual.rename(columns={"a": "owner", "b": "member"})], ignore_index=True)
    return out.drop_duplicates().sort_values(["owner", "member"]).reset_index(drop=True)


def jaccard(pairs: pd.DataFrame, sets: pd.DataFrame) -> np.ndarray:
    """``|R(q) & R(c)| / |R(q) | R(c)|`` for every row (``query, candidate``) of ``pairs`` -> ``[P]``.

    An image absent from ``sets`` has the set ``{itself}``.
    """
    if len(pairs) == 0:
        return np.zeros(0)
    size = sets.groupby("owner").size()
    key = pd.DataFrame(
        {
            "query": pairs["query"].to_numpy(dtype=object),
            "candidate": pairs["candidate"].to_numpy(dtype=object),
            "row": np.arange(len(pairs)),
        }
    )
    via_q = key.merge(sets.rename(columns={"owner": "query"}), on="query")
    common = via_q.merge(sets.rename(columns={"owner": "candidate"}), on=["candidate", "member"])
    inter = np.bincount(common["row"].to_numpy(), minlength=len(pairs)).astype(np.float64)
    size_q = key["query"].map(size).fillna(1).to_numpy(np.float64)
    size_c = key["candidate"].map(size).fillna(1).to_numpy(np.float64)
    return inter / (size_q + size_c - inter)


def rerank_scores(
    pairs: pd.DataFrame, score: np.ndarray, k1: int, k2: int, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Re-ranked scores ``(1 - lam) * score + lam * J`` and the Jaccard terms ``J``, both ``[P]``.

    ``pairs`` holds every shortlist pair of one dataset (query x gallery and gallery x gallery).
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if k2 > k1:
        logger.warning("K2=%d > K1=%d: the reciprocity radius is wider than the neighbour list", k2, k1)
    score = np.asarray(score, np.float64)
    sets = reciprocal_sets(similarity_edges(pairs, score), k1, k2)
    jac = jaccard(pairs, sets)
    return (1 - lam) * score + lam * jac, jac


def choose_rerank(
    meta: pd.DataFrame, pairs: pd.DataFrame, fused: np.ndarray, reranked: np.ndarray, tuning: dict
) -> tuple[bool, dict]:
    """``rerank.datasets: auto``: re-rank when it beats WildFusion on the simulated open-set splits.

    Both scores are judged at their own robust threshold (:func:`workflow.pair_stage.simulated_scores`) on the
    same splits of the gallery (its gallery x gallery pairs only: no query truth is read); re-ranking applies
    only when it gains more than the spread of the per-split difference (:func:`workflow.robust.prefer_simpler`):
    within that, the simpler stage (no re-ranking) wins. Returns whether re-ranking applies and the report.
    """
    applied, report = prefer_simpler(
        simulated_scores(meta, pairs, fused, tuning),
        simulated_scores(meta, pairs, reranked, tuning),
        names=("wildfusion_score", "rerank_score"),
    )
    return applied, {**report, "auto": True}


def run(args: argparse.Namespace) -> None:
    """The stage on one dataset: re-ranked (or passed-through) scores, predictions, threshold, curve and cost."""
    conf = json.loads(args.conf)
    meta = read_tsv(args.metadata)
    pairs = pd.read_parquet(args.pairs)
    fused = pairs["fused"].to_numpy(np.float64)
    tuning = json.loads(args.tuning)
    setting = conf["datasets"]
    k1, k2, lam = int(conf["k1"]), int(conf["k2"]), float(conf["lambda"])
    start = time.perf_counter()
    choice: dict = {}
    if setting == "auto":
        reranked, jac = rerank_scores(pairs, fused, k1, k2, lam)
        applied, choice = choose_rerank(meta, pairs, fused, reranked, tuning)
        score, jac = (reranked, jac) if applied else (fused, np.zeros(len(pairs)))
    else:
        applied = args.dataset in set(setting)
        score, jac = rerank_scores(pairs, fused, k1, k2, lam) if applied else (fused, np.zeros(len(pairs)))
    seconds = time.perf_counter() - start
    kind = pairs["kind"].to_numpy()
    cost = {
        "dataset": args.dataset,
        "applied": applied,
        "query_pairs": int((kind == "query").sum()),
        "gallery_pairs": int((kind == "gallery").sum()),
        "extra_pairs_matched": 0,
        "seconds": round(seconds, 3),
        "datasets": setting,
        **choice,
    }
    if applied:
        cost.update(k1=k1, k2=k2, **{"lambda": lam}, mean_jaccard=float(jac.mean()) if len(jac) else 0.0)
        logger.info("%s: re-ranked %d query and %d gallery pairs (K1=%d, K2=%d, lambda=%.2f) in %.2f s; "
                    "0 extra pairs matched", args.dataset, cost["query_pairs"], cost["gallery_pairs"], k1, k2, lam,
                    seconds)  # fmt: skip
    elif setting == "auto":
        logger.info("%s: re-ranking does not improve the simulated open-set score beyond its spread (%.4f vs "
                    "WildFusion %.4f, tolerance %.4f): WildFusion scores pass through", args.dataset,
                    choice["rerank_score"], choice["wildfusion_score"], choice["tolerance"])  # fmt: skip
    else:
        logger.info("%s is not in rerank.datasets %s: WildFusion scores pass through", args.dataset,
                    setting)  # fmt: skip
    preds, info, curve = predict_stage(
        meta, pairs, score, json.loads(args.threshold), json.loads(args.tuning), args.dataset
    )
    table = pairs[["query", "candidate", "kind"]].assign(wildfusion=fused, jaccard=jac, rerank=score)
    write_parquet(table, args.pairs_out)
    if args.pseudo:
        write_parquet(pseudo_pairs_table(meta, pairs, score, tuning), args.pseudo)
    write_stage_outputs(args.dataset, preds, info, curve, args.predictions, args.threshold_out, args.curve)
    write_json(cost, args.cost)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(
        __doc__, "metadata", arg("--pairs", required=True, help="WildFusion's pairs.parquet"), "dataset",
        arg("--conf", help="JSON: datasets, k1, k2, lambda"), "threshold tuning predictions threshold-out curve",
        "pairs-out cost pseudo log",
    )  # fmt: skip
    run_stage(parser, argv, run)


if __name__ == "__main__":
    main()
