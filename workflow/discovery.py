"""Discovery stage: group the query photos of new animals into individuals (AnimalCLEF 2026).

Photos that the label stage (the cascade by default) assigned to a known individual stay anchored to it; the
photos it called ``new_individual`` are clustered into new individuals by average-linkage agglomerative
clustering on a sparse graph of calibrated pair scores (a pair that was never scored has similarity 0). Two
clusters merge while the mean similarity over every pair of their photos is at least the threshold. The
threshold is fixed in config or ``auto``: tuned without the query truth on simulated open-set splits of the
gallery (:func:`workflow.thresholds.simulate_open_set_split`): the pseudo-new individuals' gallery images are
clustered with the gallery x gallery pair scores and the threshold of best mean adjusted mutual information
(AMI, not ARI: thresholds tuned on ARI over-merge) is chosen.

Subcommands (one rule each):

``pairs``       embeddings of the shortlist backbone -> ``results/discovery/<dataset>/<key>/pairs.parquet``: the
                query x query shortlist (``query, candidate, rank, cosine, kind``, kind ``query_query``; each
                query's top-``k`` other queries by global cosine, one row per unordered pair) and a ``cost.json``.
``cluster``     label-stage predictions + WildFusion's pair table (gallery pairs) + query x query pairs with raw
                scores (cosine and optional matcher shards) + the dataset's calibrators ->
                ``results/stages/discovery/<dataset>/clusters.tsv`` (``image_id, cluster, anchored``),
                ``threshold.json``, ``threshold_curve.tsv`` (``threshold, AMI, ARI, clusters``), ``cost.json`` and
                ``calibrators.json`` (the calibrators used and their origin). A dataset without a gallery has no
                label stage and no gallery pairs: every query is new, its calibrators are pooled from the other
                datasets' ``calibrators.json`` (else its raw scores rank-normalised) and its threshold is theirs
                (else ``discovery.fallback_threshold``): see :mod:`workflow.discovery_calibration`.
``submission``  every dataset's clusters -> ``results/clusters.csv`` (``image_id,cluster``, one row per query).
``score``       clusters (their ``anchored`` column keeps the label stage's labels) + ``solution.csv`` ->
                ``results/discovery_scores.tsv`` (``stage, dataset, ARI, AMI, clusters, true_clusters``): discovery
                and three reference clusterings
                (``all_alone``: every photo alone; ``new_alone``: labels kept, every new photo alone;
                ``new_together``: labels kept, every new photo in one cluster). Only this reads the solution.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.calibration import IsotonicCalibrator, fuse_scores
from workflow.cli import arg, command, run_stage, stage_parser
from workflow.data import read_table
from workflow.discovery_calibration import (
    GALLERY,
    REFIT,
    borrowed_threshold,
    fallback_calibrators,
    refit_cosine,
    save_calibrators,
)
from workflow.embed import load_embeddings
from workflow.match import read_shards
from workflow.pair_stage import source_scores
from workflow.robust import PlateauPick, plateau_pick
from workflow.shortlist import topk_inner_product
from workflow.stage_io import atomic_path, read_json, read_tsv, write_json, write_parquet, write_tsv
from workflow.thresholds import resolve_threshold, simulate_open_set_split

logger = logging.getLogger(__name__)

QUERY_QUERY = "query_query"
CLUSTER_COLUMNS = ["image_id", "cluster", "anchored"]
CURVE_COLUMNS = ["threshold", "AMI", "ARI", "clusters"]
SCORE_COLUMNS = ["stage", "dataset", "ARI", "AMI", "clusters", "true_clusters"]
REFERENCES = ("all_alone", "new_alone", "new_together")


# ---------------------------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------------------------


def query_query_pairs(query_ids: Sequence[str], embeddings: np.ndarray, k: int) -> pd.DataFrame:
    """Top-``k`` other queries of each query by inner product (``embeddings: [Q x D]``, L2-normalised).

    One row per unordered pair (``query < candidate`` as strings), ``rank`` the better of its two ranks and
    ``cosine`` its similarity, ``kind`` ``query_query``.
    """

    ids = np.asarray(query_ids, dtype=object)
    idx, sim = topk_inner_product(np.asarray(embeddings, np.float32), np.asarray(embeddings, np.float32), k, True)
    kk = idx.shape[1]
    a = np.repeat(ids, kk)
    b = ids[idx.ravel()] if kk else np.zeros(0, object)
    lo = np.where(a.astype(str) < b.astype(str), a, b)
    hi = np.where(a.astype(str) < b.astype(str), b, a)
    table = pd.DataFrame(
        {
            "query": lo,
            "candidate": hi,
            "rank": np.tile(np.arange(1, kk + 1), len(ids)),
            "cosine": sim.ravel().astype(np.float32),
        }
    )
    table = table.groupby(["query", "candidate"], as_index=False, sort=True).agg(rank=("rank", "min"),
                                                                                 cosine=("cosine", "max"))  # fmt: skip
    return table.assign(kind=QUERY_QUERY)[["query", "candidate", "rank", "cosine", "kind"]]


def fuse_sources(raw: pd.DataFrame, calibrators: dict[str, IsotonicCalibrator], weights: dict | None) -> np.ndarray:
    """Fused probability ``[P]`` of raw score columns (one per source) through their calibrators."""
    missing = sorted(set(raw.columns) - set(calibrators))
    if missing:
        raise ValueError(f"no calibrator for source(s) {missing}")
    calibrated = pd.DataFrame({name: calibrators[name].predict(raw[name].to_numpy()) for name in raw.columns})
    return fuse_scores(calibrated, weights)


# ---------------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------------


def similarity_matrix(
    n: int, i: np.ndarray, j: np.ndarray, score: np.ndarray, base: np.ndarray | None = None
) -> np.ndarray:
    """Symmetric ``[n x n]`` similarity of sparse pairs (max over duplicates; diagonal 1).

    A pair without a score takes ``base: [n x n]`` (e.g. the calibrated global cosine of every pair), or 0
    without ``base``; a scored pair's score replaces ``base``. NaN scores count as absent.
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    score = np.clip(np.asarray(score, np.float64), 0.0, 1.0)
    ok = np.isfinite(score)
    overlay = np.full((n, n), np.nan)
    np.fmax.at(overlay, (i[ok], j[ok]), score[ok])
    overlay = np.fmax(overlay, overlay.T)
    fallback = np.zeros((n, n)) if base is None else np.clip(np.nan_to_num(np.asarray(base, np.float64)), 0.0, 1.0)
    sim = np.where(np.isnan(overlay), fallback, overlay)
    sim = np.maximum(sim, sim.T)
    np.fill_diagonal(sim, 1.0)
    return sim


def average_linkage(sim: np.ndarray) -> np.ndarray:
    """SciPy linkage matrix ``[(n-1) x 4]`` of average-linkage clustering on distance ``1 - sim``."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    n = len(sim)
    if n < 2:
        return np.zeros((0, 4))
    dist = np.clip(1.0 - sim, 0.0, 1.0)
    np.fill_diagonal(dist, 0.0)
    return linkage(squareform(dist, checks=False), method="average")


def cut(linkage_matrix: np.ndarray, n: int, threshold: float) -> np.ndarray:
    """Flat cluster ids ``[n]`` (0-based): merges whose mean similarity is at least ``threshold``."""
    from scipy.cluster.hierarchy import fcluster

    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    labels = fcluster(linkage_matrix, t=1.0 - float(threshold) + 1e-9, criterion="distance")
    return np.asarray(labels, np.int64) - 1


def cluster_graph(
    n: int, i: np.ndarray, j: np.ndarray, score: np.ndarray, threshold: float, base: np.ndarray | None = None
) -> np.ndarray:
    """Cluster ids ``[n]`` of ``n`` nodes linked by sparse pair scores ``(i, j, score)`` (each ``[P]``)."""
    return cut(average_linkage(similarity_matrix(n, i, j, score, base)), n, threshold)


def name_clusters(cluster_ids: np.ndarray, dataset: str, taken: set[str] = frozenset()) -> np.ndarray:
    """``new_<dataset>_<k>`` for each cluster id, ``k`` from 1 in order of first appearance, skipping ``taken``."""
    names: dict[int, str] = {}
    k = 0
    out = []
    for c in np.asarray(cluster_ids).tolist():
        if c not in names:
            k += 1
            while f"new_{dataset}_{k}" in taken:
                k += 1
            names[c] = f"new_{dataset}_{k}"
        out.append(names[c])
    return np.asarray(out, dtype=object)


def cluster_queries(
    dataset: str,
    labels: pd.DataFrame,
    pairs: pd.DataFrame,
    threshold: float,
    taken: set[str] = frozenset(),
    base: Callable[[np.ndarray], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Clusters of one dataset's queries.

    ``labels``: ``image_id, identity`` (a known identity or ``new_individual``) of every query; ``pairs``:
    ``query, candidate, score`` (calibrated, in [0, 1]) between queries (pairs with other images are ignored).
    ``base(image_ids [n]) -> [n x n]``: optional similarity of the pairs without a score.
    Returns ``image_id, cluster, anchored`` in the order of ``labels``: anchored photos keep their identity,
    the new ones get ``new_<dataset>_<k>``.
    """
    ids = labels["image_id"].astype(str).to_numpy(dtype=object)
    identity = labels["identity"].astype(str).to_numpy(dtype=object)
    is_new = identity == NEW_INDIVIDUAL
    cluster = identity.copy()
    new_ids = ids[is_new]
    pos = {q: p for p, q in enumerate(new_ids)}
    src = pairs["query"].astype(str).map(pos)
    dst = pairs["candidate"].astype(str).map(pos)
    keep = (src.notna() & dst.notna()).to_numpy()
    cid = cluster_graph(
        len(new_ids),
        src[keep].to_numpy(np.int64),
        dst[keep].to_numpy(np.int64),
        pairs["score"].to_numpy(np.float64)[keep],
        threshold,
        None if base is None else base(new_ids),
    )
    cluster[is_new] = name_clusters(cid, dataset, set(taken) | set(identity))
    return pd.DataFrame({"image_id": ids, "cluster": cluster, "anchored": ~is_new})[CLUSTER_COLUMNS]


# ---------------------------------------------------------------------------------------------------------------
# Threshold: fixed or auto on the gallery
# ---------------------------------------------------------------------------------------------------------------


def clustering_scores(truth: Sequence, pred: Sequence) -> dict:
    """scikit-learn's ARI and AMI of ``pred`` against ``truth`` (both ``[N]`` labels), NaN when empty."""
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    truth, pred = np.asarray(truth, dtype=str), np.asarray(pred, dtype=str)
    if len(truth) == 0:
        return {"ARI": float("nan"), "AMI": float("nan")}
    return {"ARI": float(adjusted_rand_score(truth, pred)), "AMI": float(adjusted_mutual_info_score(truth, pred))}


def discovery_curve(
    identities: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    score: np.ndarray,
    grid: np.ndarray,
    *,
    new_fraction: float = 0.33,
    query_fraction: float = 0.3,
    repeats: int = 5,
    seed: int = 0,
    base: Callable[[np.ndarray], np.ndarray] | None = None,
    per_split: bool = False,
) -> pd.DataFrame:
    """Mean AMI, ARI and cluster count per threshold over ``repeats`` simulated open-set splits of the gallery.

    ``identities: [G]`` of the gallery images; ``(i, j, score)``: sparse gallery x gallery pairs (row indices,
    ``[P]`` each). In each split the pseudo-new individuals' images are clustered with the pairs among them
    (``base(rows [m]) -> [m x m]``: optional similarity of the pairs without a score). With ``per_split``, one
    row per split and threshold (column ``split``) instead of the means.
    """
    rng = np.random.default_rng(seed)
    identities = np.asarray(identities, dtype=object)
    i, j, score = np.asarray(i, np.int64), np.asarray(j, np.int64), np.asarray(score, np.float64)
    rows = []
    for r in range(repeats):
        split = simulate_open_set_split(identities, new_fraction, query_fraction, rng)
        members = np.sort(split.query[split.is_new])
        local = np.full(len(identities), -1, np.int64)
        local[members] = np.arange(len(members))
        keep = (local[i] >= 0) & (local[j] >= 0)
        dense = None if base is None else base(members)
        tree = average_linkage(similarity_matrix(len(members), local[i[keep]], local[j[keep]], score[keep], dense))
        truth = identities[members]
        for t in grid:
            pred = cut(tree, len(members), t)
            rows.append({"split": r, "threshold": float(t), **clustering_scores(truth, pred),
                         "clusters": len(set(pred.tolist()))})  # fmt: skip
    runs = pd.DataFrame(rows)
    if per_split:
        return runs[["split", *CURVE_COLUMNS]]
    return runs.groupby("threshold", as_index=False).mean()[CURVE_COLUMNS]


def pick_by_ami(runs: pd.DataFrame) -> PlateauPick:
    """The middle of the plateau of mean AMI (``runs``: :func:`discovery_curve` with ``per_split``)."""
    table = runs.pivot(index="split", columns="threshold", values="AMI").sort_index(axis=1)
    return plateau_pick(table.columns.to_numpy(np.float64), table.to_numpy(np.float64))


def choose_discovery_threshold(
    setting, dataset: str, identities: np.ndarray, i, j, score, tuning: dict, base=None
) -> tuple[float, dict, pd.DataFrame]:
    """Fixed threshold from config, or ``auto`` (best AMI on the gallery); returns it, its record and the curve."""
    setting = resolve_threshold(setting, dataset)
    if setting != "auto":
        return setting, {"threshold": setting, "source": "config"}, pd.DataFrame(columns=CURVE_COLUMNS)
    opts = {k: tuning[k] for k in ("new_fraction", "query_fraction", "repeats", "seed") if k in tuning}
    grid = np.linspace(0.0, 1.0, int(tuning["grid_size"]))
    runs = discovery_curve(identities, i, j, score, grid, base=base, per_split=True, **opts)
    curve = runs.drop(columns="split").groupby("threshold", as_index=False).mean()[CURVE_COLUMNS]
    pick = pick_by_ami(runs)
    threshold = pick.threshold
    best = curve.iloc[pick.index]
    logger.info("%s: auto discovery threshold %.3f: simulated AMI %.3f, ARI %.3f, %.1f clusters",
                dataset, threshold, best["AMI"], best["ARI"], best["clusters"])  # fmt: skip
    info = {"threshold": threshold, "source": "auto", "criterion": "AMI", "tuning": tuning,
            "simulated": {k: float(best[k]) for k in ("AMI", "ARI", "clusters")}, "choice": pick.report()}  # fmt: skip
    return threshold, info, curve


# ---------------------------------------------------------------------------------------------------------------
# Scoring and submission
# ---------------------------------------------------------------------------------------------------------------


def reference_clusterings(labels: pd.DataFrame) -> dict[str, np.ndarray]:
    """The trivial clusterings of ``labels`` (``image_id, identity``): see :data:`REFERENCES`."""
    ids = labels["image_id"].astype(str).to_numpy(dtype=object)
    identity = labels["identity"].astype(str).to_numpy(dtype=object)
    is_new = identity == NEW_INDIVIDUAL
    alone = np.array([f"alone:{q}" for q in ids], dtype=object)
    return {
        "all_alone": alone,
        "new_alone": np.where(is_new, alone, identity),
        "new_together": np.where(is_new, "new:together", identity),
    }


def anchor_labels(clusters: pd.DataFrame) -> pd.DataFrame:
    """``image_id, identity`` of the label stage as a ``clusters.tsv`` keeps it: the identity of an anchored photo
    (its cluster), ``new_individual`` for the others (all of them in a dataset without a gallery)."""
    anchored = clusters["anchored"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    identity = np.where(anchored, clusters["cluster"].astype(str).to_numpy(dtype=object), NEW_INDIVIDUAL)
    return pd.DataFrame({"image_id": clusters["image_id"].to_numpy(dtype=object), "identity": identity})


def score_rows(dataset: str, clusters: pd.DataFrame, labels: pd.DataFrame, truth: dict | None) -> list[dict]:
    """Rows of the discovery score table of one dataset (discovery and the references)."""
    labels = labels.set_index("image_id").loc[clusters["image_id"]].reset_index()
    candidates = {"discovery": clusters["cluster"].to_numpy(dtype=object), **reference_clusterings(labels)}
    rows = []
    for stage, pred in candidates.items():
        row = {"stage": stage, "dataset": dataset, "ARI": np.nan, "AMI": np.nan, "clusters": len(set(pred.tolist())),
               "true_clusters": np.nan}  # fmt: skip
        if truth is not None:
            missing = sorted(set(clusters["image_id"]) - set(truth))
            if missing:
                raise ValueError(f"solution.csv has no row for query image(s) {missing[:3]} of dataset {dataset}")
            y = [truth[q] for q in clusters["image_id"]]
            row.update(clustering_scores(y, pred), true_clusters=len(set(y)))
        rows.append(row)
    return rows


def score_table(rows: list[dict]) -> pd.DataFrame:
    """Per-dataset rows plus one ``dataset=ALL`` row per stage (mean over datasets, as AnimalCLEF 2026 ranks)."""
    table = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    means = table.groupby("stage", sort=False)[["ARI", "AMI", "clusters", "true_clusters"]].agg(
        {"ARI": "mean", "AMI": "mean", "clusters": "sum", "true_clusters": "sum"}
    )
    total = means.reset_index().assign(dataset="ALL")[SCORE_COLUMNS]
    out = pd.concat([table, total], ignore_index=True)
    order = {s: k for k, s in enumerate(["discovery", *REFERENCES])}
    return out.sort_values("stage", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def read_clusters(path) -> pd.DataFrame:
    """A ``clusters.tsv`` with every column as string."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[])


def check_clusters(sub: pd.DataFrame, query_ids: Sequence[str]) -> None:
    """Each query image exactly once, every cluster a non-empty string (the AnimalCLEF 2026 submission)."""
    dup = sub["image_id"][sub["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"clusters list {dup.iloc[0]!r} more than once")
    missing = sorted(set(query_ids) - set(sub["image_id"]))
    extra = sorted(set(sub["image_id"]) - set(query_ids))
    if missing or extra:
        raise ValueError(
            f"clusters miss {len(missing)} query image(s) {missing[:3]} and have {len(extra)} extra {extra[:3]}"
        )
    if (sub["cluster"].astype(str).str.len() == 0).any():
        raise ValueError(f"empty cluster for {sub.loc[sub['cluster'].astype(str) == '', 'image_id'].iloc[0]!r}")


# ---------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------


def _split_shards(paths: list[str], matchers: list[str]) -> dict[str, list[str]]:
    by_matcher: dict[str, list[str]] = {m: [] for m in matchers}
    for path in paths:
        matcher = next((m for m in matchers if f"/{m}/" in path), None)
        if matcher is None:
            raise ValueError(f"shard {path} belongs to none of the matchers {matchers}")
        by_matcher[matcher].append(path)
    return by_matcher


def dense_cosine(embeddings_path: str, calibrator: IsotonicCalibrator) -> Callable[[np.ndarray], np.ndarray]:
    """``f(image_ids [n]) -> [n x n]`` calibrated global cosine of every pair (the score of unmatched pairs)."""
    emb = embedding_rows(embeddings_path)

    def dense(image_ids: np.ndarray) -> np.ndarray:
        x = np.stack([emb[str(q)] for q in image_ids]).astype(np.float64) if len(image_ids) else np.zeros((0, 1))
        return calibrator.predict((x @ x.T).ravel()).reshape(len(x), len(x))

    return dense


def embedding_rows(embeddings_path: str) -> dict[str, np.ndarray]:
    """Image id -> its embedding ``[D]`` of an embeddings file."""

    ids, emb = load_embeddings(embeddings_path)
    return {str(q): emb[r] for r, q in enumerate(ids)}


def _gallery_calibration(args, meta: pd.DataFrame, sources: list[str]):
    """Calibrators, gallery pair scores and threshold of a dataset with a gallery (the module docstring)."""

    given = [s for s in sources if not (s == "cosine" and args.cosine_calibration == REFIT)]
    calibrators = {s: IsotonicCalibrator.load(c) for s, c in zip(given, args.calibrators, strict=True)}
    origin = {s: GALLERY for s in given}
    gal_meta = meta[meta["split"] == "database"]
    gal_ids = gal_meta["image_id"].to_numpy(dtype=object)
    gal_identity = gal_meta["identity"].to_numpy(dtype=object)
    wf = pd.read_parquet(args.gallery_pairs)
    wf = wf[wf["kind"] == "gallery"].reset_index(drop=True)
    calibrated = wf.reindex(columns=sources)
    if args.cosine_calibration == REFIT:
        # the WildFusion cosine is that of the shortlist's (trained) embedding: refit on discovery's own
        emb = embedding_rows(args.embeddings)
        identity = dict(zip(gal_ids, gal_identity))
        calibrators["cosine"] = refit_cosine(wf["query"], wf["candidate"], identity, emb)
        origin["cosine"] = REFIT
        cos = np.array([float(emb[str(q)] @ emb[str(c)]) for q, c in zip(wf["query"], wf["candidate"])])
        calibrated["cosine"] = calibrators["cosine"].predict(cos)
    absent = [s for s in sources if s not in wf.columns and not (s == "cosine" and origin.get(s) == REFIT)]
    if absent:
        raise ValueError(f"{args.gallery_pairs} has no calibrated column for {absent}: add them to wildfusion.matchers")
    gscore = fuse_scores(calibrated[sources], json.loads(args.weights))
    gpos = {g: p for p, g in enumerate(gal_ids)}
    dense = dense_cosine(args.embeddings, calibrators["cosine"]) if args.dense_cosine else None
    threshold, info, curve = choose_discovery_threshold(
        json.loads(args.threshold), args.dataset, gal_identity,
        wf["query"].map(gpos).to_numpy(), wf["candidate"].map(gpos).to_numpy(), gscore, json.loads(args.tuning),
        None if dense is None else (lambda rows: dense(gal_ids[rows])),
    )  # fmt: skip
    return calibrators, origin, threshold, info, curve, set(gal_identity)


def _gallery_free_calibration(args, meta: pd.DataFrame, sources: list[str], raw: pd.DataFrame):
    """Calibrators and threshold of a dataset without a gallery (workflow/discovery_calibration.py)."""

    query_ids = meta.loc[meta["split"] == "query", "image_id"].to_numpy(dtype=object)
    dense_raw = None
    if args.embeddings:
        emb = embedding_rows(args.embeddings)
        x = np.stack([emb[str(q)] for q in query_ids]).astype(np.float64) if len(query_ids) else np.zeros((0, 1))
        dense_raw = x @ x.T
    calibrators, origin = fallback_calibrators(sources, args.pooled_calibrators, raw, dense_raw)
    setting = resolve_threshold(json.loads(args.threshold), args.dataset)
    threshold, info = borrowed_threshold(setting, args.pooled_thresholds, args.fallback_threshold)
    logger.info("%s has no gallery: threshold %.3f (%s)", args.dataset, threshold, info["source"])
    return calibrators, origin, threshold, info, pd.DataFrame(columns=CURVE_COLUMNS), set()


def _cluster_main(args) -> None:

    start = time.perf_counter()
    meta = read_tsv(args.metadata)
    sources = ["cosine", *args.matchers]
    qq = pd.read_parquet(args.query_pairs)
    raw = source_scores(qq, {m: read_shards(p) for m, p in _split_shards(args.shards, args.matchers).items()})
    if args.gallery_pairs:
        calibrators, origin, threshold, info, curve, taken = _gallery_calibration(args, meta, sources)
    else:
        calibrators, origin, threshold, info, curve, taken = _gallery_free_calibration(args, meta, sources, raw)
    qq = qq.assign(score=fuse_sources(raw[sources], calibrators, json.loads(args.weights)))
    dense = dense_cosine(args.embeddings, calibrators["cosine"]) if args.dense_cosine else None
    info.update(dense_cosine=dense is not None, calibrators=origin, gallery=bool(args.gallery_pairs))

    query_ids = meta.loc[meta["split"] == "query", "image_id"].tolist()
    if args.labels:
        preds = read_tsv(args.labels)[["image_id", "identity"]]
        missing = sorted(set(query_ids) - set(preds["image_id"]))
        if missing:
            raise ValueError(f"{args.labels} has no label for query image(s) {missing[:3]}")
        preds = preds.set_index("image_id").loc[query_ids].reset_index()
    else:  # no gallery: every query is a new individual's photo
        preds = pd.DataFrame({"image_id": query_ids, "identity": NEW_INDIVIDUAL})
    clusters = cluster_queries(args.dataset, preds, qq, threshold, taken, dense)
    n_new = int((~clusters["anchored"]).sum())
    n_new_clusters = clusters.loc[~clusters["anchored"], "cluster"].nunique()
    logger.info("%s: %d queries, %d anchored to known individuals, %d new photos in %d new individuals "
                "(threshold %.3f, %s)", args.dataset, len(clusters), len(clusters) - n_new, n_new,
                n_new_clusters, threshold, info["source"])  # fmt: skip
    pair_cost = read_json(args.pairs_cost) if args.pairs_cost else {}
    match_seconds = sum(float(pd.read_csv(b, sep="\t")["s"].sum()) for b in args.shard_benchmarks)
    cost = {**pair_cost, "sources": sources, "query_query_match_seconds": round(match_seconds, 3),
            "new_photos": n_new, "new_clusters": int(n_new_clusters),
            "cluster_seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    write_tsv(clusters, args.clusters)
    write_json(info, args.threshold_out)
    write_tsv(curve, args.curve)
    write_json(cost, args.cost)
    save_calibrators(calibrators, origin, args.calibrators_out)


def pairs_command(args: argparse.Namespace) -> None:
    """``pairs``: the query x query shortlist of one dataset (global cosine) and its cost."""

    start = time.perf_counter()
    meta = read_tsv(args.metadata)
    image_ids, emb = load_embeddings(args.embeddings)
    row_of = {str(q): r for r, q in enumerate(image_ids)}
    query_ids = meta.loc[meta["split"] == "query", "image_id"].to_numpy(dtype=object)
    pairs = query_query_pairs(query_ids, emb[[row_of[q] for q in query_ids]], args.k)
    cost = {"queries": len(query_ids), "k": args.k, "query_query_pairs": len(pairs),
            "shortlist_seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    logger.info("%d query x query pairs among %d queries (top-%d)", len(pairs), len(query_ids), args.k)
    write_parquet(pairs, args.out)
    write_json(cost, args.cost)


def submission_command(args: argparse.Namespace) -> None:
    """``submission``: every dataset's clusters as one ``clusters.csv`` in metadata order."""
    clusters = pd.concat([read_clusters(c) for c in args.clusters], ignore_index=True)[["image_id", "cluster"]]
    meta = pd.concat([read_tsv(m) for m in args.metadata], ignore_index=True)
    check_clusters(clusters, meta.loc[meta["split"] == "query", "image_id"].tolist())
    order = {q: k for k, q in enumerate(meta["image_id"])}
    clusters = clusters.sort_values("image_id", key=lambda s: s.map(order))
    with atomic_path(args.out) as tmp:
        clusters.to_csv(tmp, index=False)
    logger.info("wrote %s: %d rows, %d clusters", args.out, len(clusters), clusters["cluster"].nunique())


def score_command(args: argparse.Namespace) -> None:
    """``score``: ARI and AMI of the clusters of every dataset (rows without solution.csv: unscored)."""

    truth = None
    if args.solution:
        sol = read_table(args.solution)
        truth = dict(zip(sol["image_id"], sol["identity"]))
    rows = []
    for dataset, path in zip(args.datasets, args.clusters, strict=True):
        clusters = read_clusters(path)
        rows.extend(score_rows(dataset, clusters, anchor_labels(clusters), truth))
    table = score_table(rows)
    logger.info("\n%s", table.to_string(index=False))
    write_tsv(table.round(6), args.out)


def main(argv: list[str] | None = None) -> None:
    commands = {
        "pairs": command(None, "metadata embeddings", arg("--k", type=int, required=True), "out cost"),
        "cluster": command(None, "dataset metadata",
                           arg("--labels", default="",
                               help="predictions.tsv of the label stage (none: every query is new)"),
                           arg("--gallery-pairs", default="",
                               help="WildFusion's pairs.parquet (none: a dataset without gallery)"),
                           arg("--query-pairs", required=True), arg("--pairs-cost", default=""),
                           arg("--embeddings", required=False, default="",
                               help="discovery's global embedding (dense cosine, refit, rank)"),
                           arg("--dense-cosine", action="store_true",
                               help="unscored pairs take the calibrated global cosine"),
                           arg("--cosine-calibration", choices=["gallery", "refit"], default="gallery",
                               help="refit: the cosine calibrator is refitted on --embeddings "
                               "(the shortlist's is another one)"),
                           arg("--pooled-calibrators", nargs="*", default=[],
                               help="no gallery: other datasets' calibrators.json"),
                           arg("--pooled-thresholds", nargs="*", default=[],
                               help="no gallery: other datasets' threshold.json"),
                           arg("--fallback-threshold", type=float, default=0.95),
                           "matchers shards",
                           arg("--shard-benchmarks", nargs="*", default=[],
                               help="Snakemake benchmark records of the shards"),
                           arg("--calibrators", nargs="*", default=[],
                               help="the gallery's: cosine first (unless refit), then --matchers order"),
                           "weights threshold tuning", arg("--clusters", required=True),
                           "threshold-out curve cost",
                           arg("--calibrators-out", required=True,
                               help="calibrators.json: the calibrators used, their origin")),
        "submission": command(None, arg("--clusters", nargs="+", required=True), arg("--metadata", nargs="+"), "out"),
        "score": command(None, arg("--datasets", nargs="+", required=True),
                         arg("--clusters", nargs="+", required=True, help="--datasets order"),
                         arg("--solution", required=False, default=""), "out"),
    }  # fmt: skip
    handlers = {"pairs": pairs_command, "cluster": _cluster_main, "submission": submission_command,
                "score": score_command}  # fmt: skip
    run_stage(stage_parser(__doc__, "log", commands=commands), argv, handlers)


if __name__ == "__main__":
    main()
