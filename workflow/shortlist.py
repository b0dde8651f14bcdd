"""Candidate shortlist: the top-K gallery images of every image by global cosine (faiss inner product, on the
job's GPU when it has one: workflow/faiss_search.py).

Inputs
    ``results/data/<dataset>.tsv`` and ``results/embeddings/<dataset>/<backbone>/<key>.npz`` (never the
    solution: its recall is reported by workflow/shortlist_recall.py, so the answer key reruns no shortlist).
Outputs
    ``results/shortlist/<dataset>/<key>.parquet`` with one row per pair: ``query, candidate, rank, cosine, kind``,
    where ``kind`` is ``query`` (a query image and its top ``k_query`` gallery candidates) or ``gallery``
    (a gallery image and its top ``k_gallery`` *other* gallery images: the labelled pairs for calibration,
    threshold tuning and re-ranking), and ``origin``: ``global`` (the cosine top-K), ``local`` (added by the LNBNN
    union: the gallery images of the image's top individuals by LNBNN, workflow/lnbnn.py, ranked after the
    global ones) or ``both``. :func:`shortlist_recall`: recall@K of the query shortlist (the share of
    known queries whose individual appears among the candidates), which bounds every later stage.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from workflow.cli import arg, run_stage, stage_parser
from workflow.embed import load_embeddings
from workflow.faiss_search import topk_inner_product
from workflow.stage_io import read_tsv, write_parquet

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ["query", "candidate", "rank", "cosine", "kind", "origin"]


def _pairs(query_ids, gallery_ids, idx, sim, kind: str) -> pd.DataFrame:
    k = idx.shape[1]
    return pd.DataFrame(
        {
            "query": np.repeat(np.asarray(query_ids, dtype=object), k),
            "candidate": np.asarray(gallery_ids, dtype=object)[idx.ravel()],
            "rank": np.tile(np.arange(1, k + 1), len(query_ids)),
            "cosine": sim.ravel().astype(np.float32),
            "kind": kind,
        }
    )


def build_shortlist(
    meta: pd.DataFrame, image_ids: np.ndarray, embeddings: np.ndarray, k_query: int, k_gallery: int, device: str = "cpu"
) -> pd.DataFrame:
    """Query and gallery shortlists of one dataset as a pair table (see the module docstring)."""
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    gal = meta.loc[meta["split"] == "database", "image_id"].to_numpy(dtype=object)
    qry = meta.loc[meta["split"] == "query", "image_id"].to_numpy(dtype=object)
    g_emb = embeddings[[row_of[i] for i in gal]]
    q_emb = embeddings[[row_of[i] for i in qry]] if len(qry) else np.zeros((0, embeddings.shape[1]), np.float32)
    q_idx, q_sim = topk_inner_product(q_emb, g_emb, k_query, device=device)
    g_idx, g_sim = topk_inner_product(g_emb, g_emb, k_gallery, exclude_self=True, device=device)
    pairs = pd.concat(
        [_pairs(qry, gal, q_idx, q_sim, "query"), _pairs(gal, gal, g_idx, g_sim, "gallery")], ignore_index=True
    )
    return pairs.assign(origin="global")[PAIR_COLUMNS]


def unite(pairs: pd.DataFrame, local: pd.DataFrame, image_ids: np.ndarray, embeddings: np.ndarray) -> pd.DataFrame:
    """The shortlist ``pairs`` with the LNBNN candidates ``local`` (``query, candidate, kind``) added after them:
    a pair in both becomes ``origin == both``; new ones get their cosine and the next ranks of their image."""
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    key = ["query", "candidate"]
    local = local.drop_duplicates(key)
    in_global = local.merge(pairs[key], on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    both = pairs[key].merge(local[key], on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    pairs = pairs.assign(origin=np.where(both, "both", pairs["origin"].to_numpy()))
    new = local[~in_global]
    if new.empty:
        return pairs
    q = embeddings[new["query"].map(row_of).to_numpy()]
    c = embeddings[new["candidate"].map(row_of).to_numpy()]
    last = pairs.groupby("query")["rank"].max()
    start = new["query"].map(last).fillna(0).to_numpy(np.int64)
    added = new.assign(
        rank=start + new.groupby("query").cumcount().to_numpy() + 1,
        cosine=np.einsum("ij,ij->i", q, c).astype(np.float32),
        origin="local",
    )
    return pd.concat([pairs, added[PAIR_COLUMNS]], ignore_index=True)


def union_candidates(scores: pd.DataFrame, meta: pd.DataFrame, individuals: int, per_individual: int,
                     cosine_of) -> pd.DataFrame:  # fmt: skip
    """Candidate pairs from the top ``individuals`` of each image: ``query, candidate, kind``.

    Each top individual contributes its ``per_individual`` gallery images most similar to the image by
    ``cosine_of(query, candidates) -> [C]`` (never the image itself).
    """
    gal = meta[meta["split"] == "database"]
    by_identity = gal.groupby(gal["identity"].astype(str))["image_id"].agg(lambda s: list(s.astype(str)))
    top = scores[scores["rank"] <= individuals]
    rows = []
    for (query, kind), group in top.groupby(["image_id", "kind"], sort=False):
        for ident in group["identity"]:
            cands = [c for c in by_identity.get(ident, []) if c != query]
            if not cands:
                continue
            if len(cands) > per_individual:
                sims = cosine_of(query, cands)
                cands = [cands[j] for j in np.argsort(-sims, kind="stable")[:per_individual]]
            rows.extend((query, c, kind) for c in cands)
    return pd.DataFrame(rows, columns=["query", "candidate", "kind"])


def lnbnn_union(pairs, meta, image_ids, embeddings, scores, individuals: int, images: int) -> pd.DataFrame:
    """:func:`unite` with the gallery images of each image's top ``individuals`` by LNBNN (``images`` each)."""
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}

    def cosine_of(query, candidates):
        return embeddings[[row_of[c] for c in candidates]] @ embeddings[row_of[query]]

    local = union_candidates(scores, meta, individuals, images, cosine_of)
    return unite(pairs, local, image_ids, embeddings)


def shortlist_recall(pairs: pd.DataFrame, meta: pd.DataFrame, solution: pd.DataFrame) -> dict:
    """Recall@K of the query shortlist over known queries (``solution.new`` False)."""
    identity = dict(zip(meta["image_id"], meta["identity"]))
    sol = solution[solution["new"].str.lower().isin(["false", "0"])]
    truth = dict(zip(sol["image_id"], sol["identity"]))
    q = pairs[(pairs["kind"] == "query") & pairs["query"].isin(truth)]
    hit = q.assign(hit=q["candidate"].map(identity) == q["query"].map(truth)).groupby("query")["hit"].any()
    if "origin" not in q or not q["origin"].ne("global").any():
        k = int(q["rank"].max()) if len(q) else 0
        return {"k": k, "known_queries": int(len(hit)), "recall": float(hit.mean()) if len(hit) else float("nan")}
    q = q.assign(hit=q["candidate"].map(identity) == q["query"].map(truth))
    glob, loc = q[q["origin"] != "local"], q[q["origin"] != "global"]
    k = int(glob["rank"].max())
    out = {"k": k, "known_queries": int(len(hit))}
    for name, part in (("global", glob), ("local", loc), ("union", q)):
        out[f"recall_{name}"] = float(part.groupby("query")["hit"].any().reindex(hit.index, fill_value=False).mean())
    out["recall"] = out["recall_union"]
    out["candidates_per_query"] = round(len(q) / max(q["query"].nunique(), 1), 2)
    return out


def read_pairs(path) -> pd.DataFrame:
    return pd.read_parquet(path)


def run(args: argparse.Namespace) -> None:
    """The shortlist of one dataset (faiss limited to ``--threads``)."""
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    meta = read_tsv(args.metadata)
    image_ids, emb = load_embeddings(args.embeddings)
    pairs = build_shortlist(meta, image_ids, emb, args.k_query, args.k_gallery, args.device)
    if args.lnbnn and args.lnbnn_individuals > 0:
        n = len(pairs)
        pairs = lnbnn_union(pairs, meta, image_ids, emb, pd.read_parquet(args.lnbnn), args.lnbnn_individuals,
                            args.lnbnn_images)  # fmt: skip
        logger.info("LNBNN union: %d pairs added to %d (top %d individuals, %d images each)", len(pairs) - n, n,
                    args.lnbnn_individuals, args.lnbnn_images)  # fmt: skip
    logger.info(
        "%d query pairs, %d gallery pairs", (pairs["kind"] == "query").sum(), (pairs["kind"] == "gallery").sum()
    )
    write_parquet(pairs, args.out)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(
        __doc__, "metadata embeddings", arg("--k-query", type=int, required=True),
        arg("--k-gallery", type=int, required=True),
        arg("--device", default="cpu", help="cpu, auto or cuda: faiss's GPU index where it has GPU support"),
        arg("--lnbnn", help="LNBNN scores (workflow/lnbnn.py) whose top individuals join the shortlist"),
        arg("--lnbnn-individuals", type=int, default=0), arg("--lnbnn-images", type=int, default=2),
        "threads out log",
    )  # fmt: skip
    run_stage(parser, argv, run)


if __name__ == "__main__":
    main()
