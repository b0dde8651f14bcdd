"""Prediction with a trained dual-backbone model (fine-tuned or frozen mode): embed, retrieve (faiss), threshold.

Inputs: the model file and ``results/data/<dataset>.tsv``. Outputs: ``predictions.tsv`` (``image_id,
identity, top_identity, top_score``), ``threshold.json``, ``threshold_curve.tsv``, the per-split pseudo-query
predictions (``pseudo.parquet``) and optionally the embeddings (``.npz``). :func:`predict_dataset` predicts with
a fine-tuned model or a frozen-mode one (:func:`predict_frozen`: :mod:`workflow.dual_backbone.frozen`, its ``auto``
threshold tuned on held-out split heads, :mod:`workflow.dual_backbone.heldout`); :func:`embed_table` embeds a
table with either.
"""

from __future__ import annotations

import logging
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
from workflow.dual_backbone.frozen import is_frozen_model, load_frozen_model, project, table_views
from workflow.dual_backbone.heldout import abstaining_pseudo, pseudo_runs, pseudo_scorer
from workflow.dual_backbone.model import DualBackbone, load_model
from workflow.embed import l2_normalise, save_embeddings
from workflow.faiss_search import topk_inner_product
from workflow.score_scale import quantile_map
from workflow.stage_io import write_parquet, write_stage_outputs
from workflow.thresholds import apply_threshold, choose_threshold

logger = logging.getLogger(__name__)

# predictions, threshold info, threshold curve, embeddings [N x P] of every row, pseudo-query predictions
FrozenPrediction = tuple[pd.DataFrame, dict, pd.DataFrame, np.ndarray, pd.DataFrame]


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
    cache: str | Path = "resources/cache/embeddings",
) -> None:
    """Embed every image of ``meta`` with the model file (fine-tuned, or frozen mode: :func:`predict_frozen`,
    its views cached under ``cache``), predict the queries and write the stage outputs."""
    gal = meta[meta["split"] == "database"].reset_index(drop=True)
    if is_frozen_model(model_path):
        preds, info, curve, emb, pseudo = predict_frozen(meta, model_path, dataset, threshold_setting, tuning, k,
                                                         str(cache), device)  # fmt: skip
    else:
        model, _, _, augment = load_model(model_path)
        qry = meta[meta["split"] == "query"].reset_index(drop=True)
        emb = embed(model, meta["abspath"].tolist(), _orientations(meta), augment, batch_size, device)
        is_gal = (meta["split"] == "database").to_numpy()
        preds, info, curve = predict(qry["image_id"].to_numpy(), emb[~is_gal], emb[is_gal],
                                     gal["identity"].to_numpy(), threshold_setting, tuning, dataset, k,
                                     resolve_device(device))  # fmt: skip
        pseudo = None
        if pseudo_out:  # judged on its own training images, the fine-tuned model abstains from `auto` choices
            pseudo = abstaining_pseudo(gal["identity"].to_numpy(), gal["image_id"].to_numpy(), tuning)
    if embeddings_out:
        save_embeddings(embeddings_out, meta["image_id"].to_numpy(), emb)
    if pseudo_out:
        write_parquet(pseudo, pseudo_out)
    write_stage_outputs(dataset, preds, info, curve, predictions_out, threshold_out, curve_out)


def predict_frozen(meta: pd.DataFrame, model_path: str | Path, dataset: str, threshold_setting: Any, tuning: dict,
                   k: int, cache: str, device: str) -> FrozenPrediction:  # fmt: skip
    """A frozen-mode model's predictions, threshold info and curve (retrieval; ``auto`` threshold tuned on per-split
    heads, :func:`workflow.dual_backbone.heldout.pseudo_runs`), the embeddings ``[N x P]`` of every row of ``meta``
    and the pseudo-query predictions of the splits."""
    model, _, _, settings = load_frozen_model(model_path)
    is_gal = (meta["split"] == "database").to_numpy()
    gal = meta[is_gal].reset_index(drop=True)
    qry = meta[meta["split"] == "query"].reset_index(drop=True)
    frozen = settings["frozen"]
    gviews = table_views(gal, settings, int(frozen["views"]), cache, device)
    qviews = table_views(qry, settings, 1, cache, device)
    split_scores: list[np.ndarray] = []
    pseudo = pseudo_runs(gviews, gal["identity"].to_numpy(dtype=object), gal["image_id"].to_numpy(dtype=object),
                         settings["dims"], frozen, settings["head"], tuning, qviews[:, 0], split_scores)  # fmt: skip
    scorer = pseudo_scorer(pseudo, gal["image_id"].astype(str).to_numpy())
    g_emb, q_emb = project(model, gviews[:, 0]), project(model, qviews[:, 0])
    idx, conf = retrieve(q_emb, g_emb, k=int(k))
    if split_scores and conf.shape[1]:
        # The final head's scores onto the split heads' scale, on which every threshold of this source is tuned.
        raw_median = float(np.median(conf[:, 0]))
        conf = quantile_map(conf[:, 0], np.concatenate(split_scores))[:, None].astype(np.float32)
        logger.info("query top scores quantile-mapped onto the %d split heads' scale: median %.4f -> %.4f",
                    len(split_scores), raw_median, float(np.median(conf[:, 0])))  # fmt: skip
    threshold, info, curve = choose_threshold(threshold_setting, dataset, scorer,
                                              gal["identity"].to_numpy(dtype=object), tuning)  # fmt: skip
    top_identity = gal["identity"].to_numpy(dtype=object)[idx[:, 0]] if idx.shape[1] else np.full(len(qry), "", object)
    top_score = conf[:, 0] if conf.shape[1] else np.full(len(qry), -np.inf, np.float32)
    preds = pd.DataFrame({"image_id": qry["image_id"].to_numpy(dtype=object),
                          "identity": apply_threshold(top_identity, top_score, threshold),
                          "top_identity": top_identity, "top_score": top_score})  # fmt: skip
    emb = np.zeros((len(meta), model.out_dim), np.float32)
    emb[is_gal], emb[~is_gal] = g_emb, q_emb
    return preds, info, curve, emb, pseudo


def embed_table(model_path: str, meta: pd.DataFrame, cache: str, device: str = "cpu") -> np.ndarray:
    """L2-normalised embeddings ``[N x P]`` of every row of ``meta`` (frozen or fine-tuned model file)."""
    if not is_frozen_model(model_path):
        net, _, _, augment = load_model(model_path)
        return embed(net, meta["abspath"].tolist(), _orientations(meta), augment, device=device)
    model, _, _, settings = load_frozen_model(model_path)
    return project(model, table_views(meta, settings, 1, cache, device)[:, 0])
