"""One-vs-many local matching: LNBNN votes of every image for every gallery individual (HotSpotter's scoring).

Every query descriptor is looked up in one nearest-neighbour index over the local descriptors of every gallery
image; each individual among its ``k`` nearest neighbours receives the Local Naive Bayes Nearest Neighbour vote
(McCann & Lowe, CVPR 2012): the distance to the ``(k+1)``-th neighbour minus the distance to that individual's
nearest neighbour, counted once per individual and descriptor. The score of an individual is the sum of its
votes over the image's descriptors.

Inputs
    ``results/data/<dataset>.tsv`` and the features manifest of one float-descriptor extractor (RootSIFT by
    default: ``results/features/<dataset>/<matcher>/<key>.tsv``, the cache of workflow/match.py; nothing is
    re-extracted).
Outputs
    ``results/lnbnn/<dataset>/<key>/index.faiss`` (the gallery index: exact ``IndexFlatL2`` up to
    ``flat_max`` descriptors, else ``IndexIVFFlat`` with about ``4 sqrt(N)`` lists searched with ``nprobe``),
    ``scores.parquet`` (``image_id, kind, identity, score, rank``: the top ``top`` individuals of each query
    image and of each gallery image, the latter with that image's own descriptors left out of its neighbours)
    and ``cost.json`` (descriptors, seconds to build and to search, peak memory).

Subcommand ``pairs`` maps the scores onto a shortlist: each pair ``(query, candidate)`` gets the score of the
candidate's individual for the query (0 where it got no vote), the raw score of the fusion source ``lnbnn``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow.cli import arg, command, run_stage, stage_parser
from workflow.faiss_search import _gpu_number, gpu_available
from workflow.match import FeatureStore
from workflow.stage_io import read_tsv, write_json, write_parquet

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ["image_id", "kind", "identity", "score", "rank"]
LEAVE_OUT_MARGIN = 16
"""Extra neighbours searched for a gallery image, so that dropping its own descriptors still leaves ``k + 1``."""


def strongest(desc: np.ndarray, scores: np.ndarray, cap: int | None) -> np.ndarray:
    """The ``cap`` descriptors with the highest detector score (all when ``cap`` is None or not exceeded)."""
    if cap is None or len(desc) <= cap:
        return desc
    return desc[np.sort(np.argsort(-scores, kind="stable")[:cap])]


def float_descriptors(feats, image_id: str, cap: int | None) -> np.ndarray:
    """Float32 descriptors of one image for the index (binary descriptors are refused: they need Hamming)."""
    desc = feats.descriptors
    if desc.dtype == np.uint8:
        raise ValueError(
            f"lnbnn: image {image_id}: extractor {feats.extractor!r} gives binary descriptors; set lnbnn.extractor "
            "to a float-descriptor matcher (rootsift)"
        )
    return np.ascontiguousarray(strongest(desc, feats.scores, cap), dtype=np.float32)


def build_index(desc: np.ndarray, flat_max: int, nprobe: int, device: str = "cpu", faiss: Any = None):
    """A faiss L2 index over ``desc: [N x D]`` (flat up to ``flat_max`` rows, IVF above), on the GPU if asked."""
    if faiss is None:
        import faiss
    n, dim = desc.shape
    if n <= flat_max:
        index = faiss.IndexFlatL2(dim)
    else:
        nlist = int(min(max(16, 4 * np.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        rng = np.random.default_rng(0)
        train = desc[rng.choice(n, size=min(n, 64 * nlist), replace=False)]
        index.train(train)
        index.nprobe = nprobe
    index.add(desc)
    gpu = _gpu_number(device)
    if gpu is not None and gpu_available(faiss):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, index)
    return index


def lnbnn_votes(dist: np.ndarray, owner: np.ndarray, k: int, n_owners: int) -> np.ndarray:
    """Votes per owner of ``dist, owner: [Q x k']`` (ascending distances, owner -1 = no neighbour).

    Each row votes with its first ``k`` neighbours against the ``(k+1)``-th (the last valid one when fewer),
    once per owner (its nearest neighbour). Returns ``[n_owners]`` summed votes.
    """
    votes = np.zeros(n_owners, np.float64)
    if dist.size == 0:
        return votes
    valid = owner >= 0
    n_valid = valid.sum(axis=1)
    norm_col = np.minimum(n_valid, k + 1) - 1
    rows = np.flatnonzero(n_valid >= 2)
    if len(rows) == 0:
        return votes
    norm = dist[rows, norm_col[rows]]
    cols = min(k, dist.shape[1])
    d, o = dist[rows, :cols], owner[rows, :cols]
    use = (np.arange(cols)[None, :] < norm_col[rows, None]) & (o >= 0)
    # the first column of each owner in its row (ascending distances: its nearest neighbour)
    first = np.ones_like(use)
    for j in range(1, cols):
        first[:, j] = (o[:, :j] != o[:, j : j + 1]).all(axis=1)
    use &= first
    contrib = np.maximum(norm[:, None] - d, 0.0)
    np.add.at(votes, o[use], contrib[use])
    return votes


def search(index, desc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(euclidean distances, neighbour rows)``, each ``[Q x k]`` (rows -1 where the index had fewer)."""
    if len(desc) == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    sq, idx = index.search(np.ascontiguousarray(desc, np.float32), k)
    return np.sqrt(np.maximum(sq, 0)), idx


def image_votes(index, desc: np.ndarray, k: int, row_image: np.ndarray, image_owner: np.ndarray, n_owners: int,
                leave_out: int | None = None) -> np.ndarray:  # fmt: skip
    """LNBNN votes of one image's descriptors per owner (individual).

    ``row_image: [N]`` the gallery image of each index row, ``image_owner: [G]`` the individual of each gallery
    image; ``leave_out`` a gallery image whose rows never count as neighbours (the image itself).
    """
    extra = LEAVE_OUT_MARGIN if leave_out is not None else 0
    dist, rows = search(index, desc, k + 1 + extra)
    img = np.where(rows >= 0, row_image[np.maximum(rows, 0)], -1)
    if leave_out is not None:
        keep = img != leave_out
        # stable compaction of each row: kept neighbours first, in their order
        order = np.argsort(~keep, axis=1, kind="stable")
        dist = np.take_along_axis(dist, order, axis=1)
        img = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(img, order, axis=1), -1)
        dist, img = dist[:, : k + 1], img[:, : k + 1]
    owner = np.where(img >= 0, image_owner[np.maximum(img, 0)], -1)
    return lnbnn_votes(dist, owner, k, n_owners)


def top_table(image_id: str, kind: str, votes: np.ndarray, individuals: np.ndarray, top: int) -> pd.DataFrame:
    order = np.argsort(-votes, kind="stable")
    order = order[votes[order] > 0][:top]
    return pd.DataFrame({"image_id": image_id, "kind": kind, "identity": individuals[order],
                         "score": votes[order].astype(np.float32), "rank": np.arange(1, len(order) + 1)})  # fmt: skip


def score_dataset(meta: pd.DataFrame, store, conf: dict, device: str = "cpu", faiss: Any = None):
    """Build the gallery index and score every image (see the module docstring).

    Returns ``(index, scores table, cost dict)``.
    """
    cap = conf.get("max_descriptors")
    gal = meta[meta["split"] == "database"]
    gal_ids = gal["image_id"].astype(str).to_numpy(dtype=object)
    individuals, image_owner = np.unique(gal["identity"].astype(str).to_numpy(dtype=object), return_inverse=True)
    t0 = time.perf_counter()
    parts = [float_descriptors(store[g], g, cap) for g in gal_ids]
    counts = np.array([len(p) for p in parts], np.int64)
    dim = next((p.shape[1] for p in parts if len(p)), 128)
    desc = np.concatenate(parts) if len(parts) else np.zeros((0, dim), np.float32)
    row_image = np.repeat(np.arange(len(gal_ids)), counts)
    index = build_index(desc, int(conf["flat_max"]), int(conf["nprobe"]), device, faiss)
    t_build = time.perf_counter() - t0
    logger.info("lnbnn: index of %d descriptors from %d gallery images built in %.1f s", len(desc), len(gal_ids),
                t_build)  # fmt: skip
    k, top = int(conf["k"]), int(conf["top"])
    tables = []
    t1 = time.perf_counter()
    for i, g in enumerate(gal_ids):
        votes = image_votes(index, parts[i], k, row_image, image_owner, len(individuals), leave_out=i)
        tables.append(top_table(g, "gallery", votes, individuals, top))
        _progress(len(tables), len(meta), t1)
    for q in meta.loc[meta["split"] == "query", "image_id"].astype(str):
        votes = image_votes(index, float_descriptors(store[q], q, cap), k, row_image, image_owner, len(individuals))
        tables.append(top_table(q, "query", votes, individuals, top))
        _progress(len(tables), len(meta), t1)
    t_search = time.perf_counter() - t1
    scores = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=SCORE_COLUMNS)
    cost = {
        "descriptors": int(len(desc)),
        "gallery_images": int(len(gal_ids)),
        "scored_images": int(len(meta)),
        "index": type(index).__name__,
        "build_s": round(t_build, 3),
        "search_s": round(t_search, 3),
        "per_image_ms": round(1000 * t_search / max(len(meta), 1), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    logger.info("lnbnn: %d images scored in %.1f s (%.1f ms each), peak memory %.0f MB", len(meta), t_search,
                cost["per_image_ms"], cost["peak_rss_mb"])  # fmt: skip
    return index, scores[SCORE_COLUMNS], cost


def _progress(done: int, total: int, since: float) -> None:
    if done % 500 == 0:
        logger.info("lnbnn: %d/%d images scored (%.1f s)", done, total, time.perf_counter() - since)


def pair_scores(pairs: pd.DataFrame, meta: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``query, candidate, score`` for every pair: the LNBNN score of the candidate's individual (0 if unvoted)."""
    identity = dict(zip(meta["image_id"].astype(str), meta["identity"].astype(str)))
    table = pairs[["query", "candidate"]].assign(identity=pairs["candidate"].map(identity))
    voted = scores.rename(columns={"image_id": "query"})[["query", "identity", "score"]]
    merged = table.merge(voted, on=["query", "identity"], how="left")
    return merged.assign(score=merged["score"].fillna(0.0).astype(np.float64))[["query", "candidate", "score"]]


def index_stage(args: argparse.Namespace) -> None:
    """``index``: the gallery index, the scores of every image and the cost of one dataset."""
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    meta = read_tsv(args.metadata)
    conf = json.loads(args.conf)
    index, scores, cost = score_dataset(meta, FeatureStore(read_tsv(args.features)), conf, args.device, faiss)
    if hasattr(faiss, "index_gpu_to_cpu") and type(index).__name__.startswith("Gpu"):
        index = faiss.index_gpu_to_cpu(index)
    Path(args.index).parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(args.index))
    write_parquet(scores, args.out)
    write_json(cost, args.cost)


def pairs_stage(args: argparse.Namespace) -> None:
    """``pairs``: the LNBNN score of every shortlist pair (the raw scores of the fusion source ``lnbnn``)."""
    table = pair_scores(pd.read_parquet(args.shortlist), read_tsv(args.metadata), pd.read_parquet(args.scores))
    write_parquet(table, args.out)


def main(argv: list[str] | None = None) -> None:
    commands = {
        "index": command(None, arg("--features", required=True), arg("--conf", required=True), "device threads",
                         arg("--index", required=True), arg("--cost", required=True), "out"),
        "pairs": command(None, "shortlist", arg("--scores", required=True), "out"),
    }  # fmt: skip
    parser = stage_parser(__doc__, "metadata log", commands=commands)
    run_stage(parser, argv, {"index": index_stage, "pairs": pairs_stage})


if __name__ == "__main__":
    main()
