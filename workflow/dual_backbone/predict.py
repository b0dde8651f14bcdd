"""Prediction with a trained dual-backbone model: embed, retrieve (faiss), threshold.

Inputs: the model file and ``results/data/<dataset>.tsv``. Outputs: ``predictions.tsv`` (``image_id,
identity, top_identity, top_score``), ``threshold.json``, ``threshold_curve.tsv`` and optionally the
embeddings (``.npz``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from workflow.backbones import resolve_device
from workflow.dual_backbone.data import ImageDataset, _orientations, build_eval_transform
from workflow.dual_backbone.model import DualBackbone, load_model
from workflow.embed import l2_normalise, save_embeddings
from workflow.faiss_search import topk_inner_product
from workflow.stage_io import write_parquet, write_stage_outputs
from workflow.thresholds import apply_threshold, choose_threshold


def embed(
    model: DualBackbone,
    paths: Sequence[str],
    orientations: Sequence[str] | None = None,
    augment_cfg: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> np.ndarray:
    """L2-normalised embeddings ``[N x D]`` float32 of the images at ``paths`` (eval transform, eval mode)."""
    out = np.zeros((len(paths), model.embed_dim), np.float32)
    if not len(paths):
        return out
    device = resolve_device(device)
    transform = build_eval_transform(augment_cfg, model.input_size)
    dataset = ImageDataset(paths, [0] * len(paths), orientations, transform)
    was = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            lo = 0
            for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                emb = F.normalize(model(x.to(device)).float(), dim=1).cpu().numpy()
                out[lo : lo + len(emb)] = emb
                lo += len(emb)
    finally:
        model.train(was)
    return out


def retrieve(
    query_emb: np.ndarray, gallery_emb: np.ndarray, k: int = 50, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """faiss ``IndexFlatIP`` search of L2-normalised rows: ``query [Q x D]``, ``gallery [G x D]``.

    Returns ``(index [Q x K], confidence [Q x K])`` with ``K = min(k, G)``, best first, confidence ``(cos + 1) / 2``.
    Rows are L2-normalised here (a no-op for normalised input).
    """
    query_emb, gallery_emb = np.asarray(query_emb, np.float32), np.asarray(gallery_emb, np.float32)
    if query_emb.ndim != 2 or gallery_emb.ndim != 2 or query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(f"expected query [Q x D] and gallery [G x D], got {query_emb.shape} and {gallery_emb.shape}")
    if len(gallery_emb) == 0:
        raise ValueError("the gallery is empty")
    k = min(int(k), len(gallery_emb))
    if len(query_emb) == 0:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    idx, cos = topk_inner_product(l2_normalise(query_emb), l2_normalise(gallery_emb), k, device=device)
    return idx.astype(np.int64), ((np.clip(cos, -1.0, 1.0) + 1.0) / 2.0).astype(np.float32)


def confidence_scorer(embeddings: np.ndarray, identities: np.ndarray):
    """A :data:`workflow.thresholds.Scorer` over gallery rows, scored as ``(cos + 1) / 2`` of the nearest neighbour."""
    identities = np.asarray(identities, dtype=object)

    def scorer(query_idx: np.ndarray, gallery_idx: np.ndarray):
        idx, conf = retrieve(embeddings[query_idx], embeddings[gallery_idx], k=1)
        return identities[gallery_idx][idx[:, 0]], conf[:, 0]

    return scorer


def predict(
    query_ids: np.ndarray,
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    gallery_identities: np.ndarray,
    threshold_setting,
    tuning: dict,
    dataset: str,
    k: int = 50,
    device: str = "cpu",
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """``predictions`` (``image_id, identity, top_identity, top_score``), threshold info and tuning curve."""
    gallery_identities = np.asarray(gallery_identities, dtype=object)
    idx, conf = retrieve(query_emb, gallery_emb, k=k, device=device)
    scorer = confidence_scorer(gallery_emb, gallery_identities)
    threshold, info, curve = choose_threshold(threshold_setting, dataset, scorer, gallery_identities, tuning)
    top_identity = gallery_identities[idx[:, 0]] if len(idx) else np.zeros(0, object)
    top_score = conf[:, 0] if len(conf) else np.zeros(0, np.float32)
    preds = pd.DataFrame(
        {
            "image_id": np.asarray(query_ids, dtype=object),
            "identity": apply_threshold(top_identity, top_score, threshold),
            "top_identity": top_identity,
            "top_score": top_score,
        }
    )
    return preds, info, curve


def predict_dataset(
    meta: pd.DataFrame,
    model_path: str | Path,
    dataset: str,
    *,
    threshold_setting: Any,
    tuning: dict,
    k: int,
    batch_size: int,
    device: str,
    predictions_out: str | Path,
    threshold_out: str | Path,
    curve_out: str | Path,
    embeddings_out: str | Path | None = None,
    pseudo_out: str | Path | None = None,
) -> None:
    """Embed every image of ``meta`` with the model file, predict the queries and write the stage outputs."""
    gal = meta[meta["split"] == "database"].reset_index(drop=True)
    model, _, _, augment = load_model(model_path)
    qry = meta[meta["split"] == "query"].reset_index(drop=True)
    emb = embed(model, meta["abspath"].tolist(), _orientations(meta), augment, batch_size, device)
    is_gal = (meta["split"] == "database").to_numpy()
    preds, info, curve = predict(qry["image_id"].to_numpy(), emb[~is_gal], emb[is_gal], gal["identity"].to_numpy(),
                                 threshold_setting, tuning, dataset, k, resolve_device(device))  # fmt: skip
    if embeddings_out:
        save_embeddings(embeddings_out, meta["image_id"].to_numpy(), emb)
    if pseudo_out:  # judged on its own training images, the fine-tuned model abstains from `auto` choices
        from workflow.dual_backbone_heldout import abstaining_pseudo

        pseudo = abstaining_pseudo(gal["identity"].to_numpy(), gal["image_id"].to_numpy(), tuning)
        write_parquet(pseudo, pseudo_out)
    write_stage_outputs(dataset, preds, info, curve, predictions_out, threshold_out, curve_out)
