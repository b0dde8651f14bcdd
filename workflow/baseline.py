"""Baseline stage (the paper's steps 0-1): cosine 1-NN on global embeddings with a per-dataset threshold.

Inputs
    ``results/data/<dataset>.tsv`` (validated metadata) and ``results/embeddings/<dataset>/<backbone>/<key>.npz``.
Outputs
    ``pseudo.parquet`` (``--pseudo``): cosine 1-NN on the simulated open-set splits of the gallery
    (:func:`workflow.thresholds.pseudo_table`, read by the ``auto`` cascade);
    ``predictions.tsv``: ``image_id, identity, top_identity, top_score`` for every query image;
    ``threshold.json``: the threshold used and how it was chosen; ``threshold_curve.tsv``: the simulated
    open-set score versus threshold when the threshold is ``auto`` (empty table otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pandas as pd

from workflow.cli import run_stage, stage_parser
from workflow.embed import load_embeddings
from workflow.stage_io import read_tsv, write_parquet, write_stage_outputs
from workflow.thresholds import apply_threshold, choose_threshold, scorer_pseudo_table

logger = logging.getLogger(__name__)


def nearest_neighbour(query: np.ndarray, gallery: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Cosine 1-NN of L2-normalised rows. ``query: [Q x D]``, ``gallery: [G x D]`` -> (index [Q], cos [Q])."""
    if len(gallery) == 0:
        raise ValueError("the gallery is empty")
    index = np.empty(len(query), dtype=np.int64)
    score = np.empty(len(query), dtype=np.float32)
    for start in range(0, len(query), chunk):
        sim = query[start : start + chunk] @ gallery.T
        index[start : start + chunk] = sim.argmax(axis=1)
        score[start : start + chunk] = sim[np.arange(len(sim)), index[start : start + chunk]]
    return index, score


def cosine_scorer(embeddings: np.ndarray, identities: np.ndarray):
    """A :data:`workflow.thresholds.Scorer` over gallery rows for threshold tuning."""

    def scorer(query_idx: np.ndarray, gallery_idx: np.ndarray):
        nn, score = nearest_neighbour(embeddings[query_idx], embeddings[gallery_idx])
        return identities[gallery_idx][nn], score

    return scorer


def predict(
    meta: pd.DataFrame, image_ids: np.ndarray, embeddings: np.ndarray, threshold_setting, tuning: dict, dataset: str
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Predict every query image of ``meta``; returns (predictions, threshold info, tuning curve)."""
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    missing = [i for i in meta["image_id"] if i not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} image(s) of {dataset} have no embedding, e.g. {missing[0]!r}")
    gal = meta[meta["split"] == "database"]
    qry = meta[meta["split"] == "query"]
    g_emb = embeddings[[row_of[i] for i in gal["image_id"]]]
    q_emb = embeddings[[row_of[i] for i in qry["image_id"]]]
    g_ids = gal["identity"].to_numpy(dtype=object)
    nn, score = nearest_neighbour(q_emb, g_emb) if len(qry) else (np.zeros(0, int), np.zeros(0, np.float32))
    threshold, info, curve = choose_threshold(threshold_setting, dataset, cosine_scorer(g_emb, g_ids), g_ids, tuning)
    top_identity = g_ids[nn]
    preds = pd.DataFrame(
        {
            "image_id": qry["image_id"].to_numpy(),
            "identity": apply_threshold(top_identity, score, threshold),
            "top_identity": top_identity,
            "top_score": score,
        }
    )
    return preds, info, curve


def pseudo_cosine_table(
    meta: pd.DataFrame, image_ids: np.ndarray, embeddings: np.ndarray, tuning: dict
) -> pd.DataFrame:
    """The baseline's ``pseudo.parquet``: cosine 1-NN on the simulated open-set splits of the gallery."""
    row_of = {image_id: i for i, image_id in enumerate(image_ids)}
    gal = meta[meta["split"] == "database"]
    g_ids = gal["identity"].to_numpy(dtype=object)
    g_emb = embeddings[[row_of[i] for i in gal["image_id"]]]
    return scorer_pseudo_table(cosine_scorer(g_emb, g_ids), gal["image_id"].to_numpy(dtype=object), g_ids, tuning)


def run(args: argparse.Namespace) -> None:
    """The stage on one dataset: predictions, threshold and curve (and ``pseudo.parquet`` with ``--pseudo``)."""
    meta = read_tsv(args.metadata)
    image_ids, embeddings = load_embeddings(args.embeddings)
    preds, info, curve = predict(
        meta, image_ids, embeddings, json.loads(args.threshold), json.loads(args.tuning), args.dataset
    )
    if args.pseudo:
        write_parquet(pseudo_cosine_table(meta, image_ids, embeddings, json.loads(args.tuning)), args.pseudo)
    write_stage_outputs(args.dataset, preds, info, curve, args.predictions, args.threshold_out, args.curve)


def main(argv: list[str] | None = None) -> None:
    stage = "metadata embeddings dataset threshold tuning predictions threshold-out curve pseudo log"
    run_stage(stage_parser(__doc__, stage), argv, run)


if __name__ == "__main__":
    main()
