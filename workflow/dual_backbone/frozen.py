"""Frozen-backbone mode of the dual-backbone stage: gallery-trained features that learn on CPU in minutes.

Fine-tuning whole networks (:mod:`workflow.dual_backbone`, ``dual_backbone.mode: finetune``, the paper's
setting for GPUs) does not converge in the few epochs a CPU affords. This mode keeps the pretrained
backbones frozen and trains only what sits on top of them, on cached vectors:

1. **Cached views** (:func:`cached_views`): every image is embedded once per branch and per view; view 0 is
   the deterministic embedding transform (the global-embedding stage's own vector and cache entry when no
   rotation or background removal applies), views ``1 .. V-1`` are random training augmentations
   (:func:`workflow.dual_backbone.data.build_train_transform`, seeded by the image's content hash and the view
   index, so every branch sees the same crop of the same view). Vectors are cached under
   ``<cache>/<key>/<sha1[:2]>/<sha1>_v<view>.npy`` with ``key`` a hash of the branch's configuration and
   the augmentation settings: the image content, backbone, augmentation and view index determine an entry.
2. **Head** (:class:`FrozenHead`): a ``BatchNorm1d`` per branch, concatenation (``[B x sum(D)]``) and a linear
   projection to ``proj_dim`` (``[B x P]``), trained with the same :class:`~workflow.dual_backbone.ArcFaceHead`
   and per-dataset ``(s, m)`` as the paper mode, on every cached view of the training images (AdamW, cosine
   learning-rate decay, ``epochs`` passes over the vectors: seconds on 2 cores). The validation split is
   :func:`~workflow.dual_backbone.stratified_split` with the same ``val_fraction`` and ``seed``. The history
   starts with an ``epoch 0`` row: the accuracy of the untrained starting point (nearest class mean of the
   frozen features of view 0), then the ArcFace argmax accuracy on view 0 of the validation images per epoch.
3. **Retrieval** as in the paper mode: L2-normalised projections of view 0, faiss top-``k``, ``(cos + 1) / 2``.

Held-out use of the trained similarity (pseudo runs, fold-model pair scores): :mod:`workflow.dual_backbone.heldout`;
prediction with a frozen-mode model: :func:`workflow.dual_backbone.predict.predict_frozen`. The rules reach
this mode through ``python -m workflow.dual_backbone train --mode frozen`` (:mod:`workflow.dual_backbone.cli`).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from workflow.backbones import create_backbone, preprocess, resolve_device
from workflow.dual_backbone.data import (
    _orientations,
    build_eval_transform,
    build_train_transform,
    resolve_augment,
    stratified_split,
    with_defaults,
)
from workflow.dual_backbone.model import ArcFaceHead
from workflow.dual_backbone.train import DEFAULT_TRAINING
from workflow.embed import EmbeddingCache, backbone_key, l2_normalise
from workflow.images import load_image
from workflow.safe_files import safe_load
from workflow.stage_io import atomic_path, write_tsv

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ["epoch", "loss", "val_accuracy", "val_ncm", "seconds"]

DEFAULT_FROZEN: dict[str, Any] = {
    "views": 2,  # cached views per gallery image: view 0 = embedding transform, 1.. = training augmentations
    "proj_dim": 512,  # width of the linear projection after the per-branch BatchNorms (0: no projection)
    "epochs": 10,  # passes over the cached vectors (the best validation epoch is kept)
    "batch_size": 256,
    "lr": 2e-3,  # AdamW, cosine-decayed to 0
    "weight_decay": 1e-4,
    "folds": 5,  # folds of gallery individuals for the held-out pair scores (WildFusion source "trained")
}


def resolve_frozen(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULT_FROZEN` updated with ``cfg``; unknown keys and bad values raise ``ValueError``."""
    out = with_defaults(cfg, DEFAULT_FROZEN, "dual_backbone.frozen")
    for key, low in (("views", 1), ("proj_dim", 0), ("epochs", 1), ("batch_size", 2), ("folds", 2)):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < low:
            raise ValueError(f"dual_backbone.frozen.{key} must be an integer >= {low}, got {out[key]!r}")
    for key in ("lr", "weight_decay"):
        if not float(out[key]) >= 0:
            raise ValueError(f"dual_backbone.frozen.{key} must be >= 0, got {out[key]!r}")
    return out


# ------------------------------------------------------------------------------------------------ view cache


def views_key(backbone_cfg: Mapping[str, Any], augment: Mapping[str, Any] | None) -> str:
    """Cache key of one branch's views: its configuration (without runtime keys) and the resolved augmentations."""
    conf = {k: v for k, v in sorted(backbone_cfg.items()) if k not in ("batch_size", "device", "threads")}
    blob = json.dumps(["views-v1", conf, resolve_augment(augment)], sort_keys=True, default=str)
    return "views-" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def _view_seed(sha1: str, view: int) -> int:
    return int(hashlib.sha1(f"{sha1}:{view}".encode()).hexdigest()[:8], 16)


def _plain_view0(augment: Mapping[str, Any] | None) -> bool:
    """View 0 is the embedding stage's own vector when no deterministic step (rotation, background) applies."""
    cfg = resolve_augment(augment)
    return cfg["background"] == "none" and not any(float(v) for v in cfg["rotate_by_orientation"].values())


def cached_views(
    paths: Sequence[str],
    sha1s: Sequence[str],
    orientations: Sequence[str],
    backbone_cfgs: Sequence[Mapping[str, Any]],
    augment: Mapping[str, Any] | None,
    views: int,
    cache_root: str | Path,
    device: str = "cpu",
    batch_size: int = 32,
) -> tuple[np.ndarray, list[int]]:
    """Frozen features ``[N x V x sum(D)]`` float32 (each branch's block L2-normalised) and ``[D1, D2, ..]``.

    Without rotation or background removal, view 0 is exactly the global-embedding stage's vector
    (:mod:`workflow.embed`: same preprocessing, same cache entry ``<cache>/<backbone key>/..../<sha1>.npy``), so
    the baseline's embeddings are reused and this stage's are reused by it. Missing entries are computed (a
    branch is only built when something is missing) and cached as they are computed.
    """
    n = len(paths)
    if not (len(sha1s) == len(orientations) == n):
        raise ValueError(f"paths, sha1s and orientations differ in length: {n}, {len(sha1s)}, {len(orientations)}")
    blocks, dims = [], []
    plain = _plain_view0(augment)
    device = resolve_device(device)
    for cfg in backbone_cfgs:
        caches = [EmbeddingCache(cache_root, views_key(cfg, augment))] * views
        if plain:
            caches[0] = EmbeddingCache(cache_root, backbone_key(dict(cfg)))
        names = [[s if (v == 0 and plain) else f"{s}_v{v}" for v in range(views)] for s in sha1s]
        entries = [[caches[v].get(names[i][v]) if sha1s[i] else None for v in range(views)] for i in range(n)]
        todo = [(i, v) for v in range(views) for i in range(n) if entries[i][v] is None]
        logger.info("branch %s: %d/%d views cached, %d to compute", cfg.get("source", cfg), n * views - len(todo),
                    n * views, len(todo))  # fmt: skip
        if todo:
            branch = create_backbone(dict(cfg)).to(device).eval()
            computed = _compute_views(branch, todo, paths, sha1s, orientations, augment, plain, device, batch_size)
            for (i, v), vec in computed:
                entries[i][v] = vec
                if sha1s[i]:
                    caches[v].put(names[i][v], vec)
        if not n:
            dim = create_backbone({**dict(cfg), "pretrained": False}).embed_dim
            blocks.append(np.zeros((0, views, dim), np.float32))
        else:
            block = np.stack([np.stack(row) for row in entries]).astype(np.float32)
            blocks.append(block / np.maximum(np.linalg.norm(block, axis=2, keepdims=True), 1e-12))
        dims.append(int(blocks[-1].shape[2]))
    return np.concatenate(blocks, axis=2).astype(np.float32), dims


def _compute_views(branch, todo, paths, sha1s, orientations, augment, plain, device, batch_size):
    """Yield ``((row, view), vector)`` for every ``(row, view)`` of ``todo`` (L2-normalised vectors)."""
    size = int(branch.spec.input_size)
    eval_tf, train_tf = build_eval_transform(augment, size), build_train_transform(augment, size)
    mean = torch.tensor(branch.spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(branch.spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    start, done = time.perf_counter(), 0
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo : lo + batch_size]
        images = [load_image(paths[i]) for i, _ in chunk]
        if plain and all(v == 0 for _, v in chunk):  # the embedding stage's preprocessing, exactly
            x = preprocess(images, branch.spec)
        else:
            tensors = []
            for (i, v), img in zip(chunk, images):
                if v == 0:
                    tensors.append(eval_tf(img, orientations[i]))
                else:
                    torch.manual_seed(_view_seed(sha1s[i], v))
                    tensors.append(train_tf(img, orientations[i]))
            x = (torch.stack(tensors) - mean) / std
        with torch.inference_mode():
            out = F.normalize(branch(x.to(device)).float(), dim=1).cpu().numpy()
        yield from zip(chunk, out)
        done += len(chunk)
        if (lo // batch_size) % 10 == 0 or done == len(todo):
            logger.info("computed %d/%d views (%.1f views/s)", done, len(todo), done / (time.perf_counter() - start))


# ------------------------------------------------------------------------------------------------------ model


class FrozenHead(nn.Module):
    """Per-branch ``BatchNorm1d``, concatenation and a linear projection: ``[B x sum(D)] -> [B x P]``."""

    def __init__(self, dims: Sequence[int], proj_dim: int = 512):
        super().__init__()
        if len(dims) < 1 or min(dims) < 1:
            raise ValueError(f"FrozenHead needs one positive dimension per branch, got {list(dims)}")
        self.dims = [int(d) for d in dims]
        self.norms = nn.ModuleList(nn.BatchNorm1d(d) for d in self.dims)
        self.proj = nn.Linear(sum(self.dims), proj_dim) if proj_dim else nn.Identity()
        self.out_dim = int(proj_dim) if proj_dim else sum(self.dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != sum(self.dims):
            raise ValueError(f"FrozenHead expects x: [B x {sum(self.dims)}], got {tuple(x.shape)}")
        parts = torch.split(x, self.dims, dim=1)
        return self.proj(torch.cat([norm(p) for norm, p in zip(self.norms, parts)], dim=1))


def class_mean_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Accuracy of the nearest class mean (cosine) of ``val_x: [M x D]`` among the classes of ``train_x: [N x D]``."""
    if not len(val_y):
        return float("nan")
    train_x, val_x = l2_normalise(train_x), l2_normalise(val_x)
    classes = np.unique(train_y)
    means = l2_normalise(np.stack([train_x[train_y == c].mean(0) for c in classes]))
    return float((classes[(val_x @ means.T).argmax(1)] == val_y).mean())


def _branch_normalised(x: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """Each branch's block of ``x: [N x sum(D)]`` L2-normalised (the untrained starting point's features)."""
    parts = np.split(x, np.cumsum(dims)[:-1], axis=1)
    return np.concatenate([l2_normalise(p) for p in parts], axis=1)


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    dims: Sequence[int],
    cfg: Mapping[str, Any],
    head_cfg: Mapping[str, Any] | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> tuple[FrozenHead, ArcFaceHead, pd.DataFrame]:
    """Train a :class:`FrozenHead` and an ArcFace head on cached views.

    ``features: [N x V x sum(D)]`` (every view of the training images), ``labels: [N]`` in ``0 .. n_classes-1``;
    ``val``: ``(features [M x sum(D)] of view 0, labels [M])``. Returns the eval-mode modules and the history
    (``epoch, loss, val_accuracy, val_ncm, seconds``): ``val_accuracy`` is the ArcFace argmax (the paper mode's
    validation), ``val_ncm`` the nearest class mean (cosine, view 0 of the training images) in the trained
    embedding, i.e. the retrieval the stage does; epoch 0 is the untrained starting point, the nearest class mean
    of the frozen features. With a validation set the returned weights are those of the epoch of best ``val_ncm``
    (epochs chosen on the gallery's own validation split).
    """
    cfg = resolve_frozen(cfg)
    torch.manual_seed(seed)
    n, views, width = features.shape
    x = torch.from_numpy(np.ascontiguousarray(features.reshape(n * views, width), np.float32))
    y = torch.from_numpy(np.repeat(np.asarray(labels, np.int64), views))
    model = FrozenHead(dims, int(cfg["proj_dim"]))
    head = ArcFaceHead(model.out_dim, n_classes, **dict(head_cfg or {}))
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
    steps = epochs * max(1, math.ceil(len(x) / bs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    history = []
    best: tuple[float, int, dict, dict] | None = None
    has_val = val is not None and len(val[1]) > 0
    if has_val:
        start = _branch_normalised(features[:, 0], dims)
        ncm0 = class_mean_accuracy(start, np.asarray(labels), _branch_normalised(val[0], dims), np.asarray(val[1]))
        history.append({"epoch": 0, "loss": float("nan"), "val_accuracy": float("nan"), "val_ncm": ncm0,
                        "seconds": 0.0})  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train(), head.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for lo in range(0, len(order), bs):
            idx = order[lo : lo + bs]
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            loss = criterion(head(model(x[idx]), y[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        row = {"epoch": epoch, "loss": total / len(x), "val_accuracy": float("nan"), "val_ncm": float("nan")}
        if has_val:
            row["val_accuracy"] = head_accuracy(model, head, val[0], val[1])
            row["val_ncm"] = class_mean_accuracy(project(model, features[:, 0]), np.asarray(labels),
                                                 project(model, val[0]), np.asarray(val[1]))  # fmt: skip
            if best is None or row["val_ncm"] > best[0]:
                best = (row["val_ncm"], epoch, copy.deepcopy(model.state_dict()), copy.deepcopy(head.state_dict()))
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
    if best is not None and best[1] != epochs:
        logger.info("keeping epoch %d of %d (best validation nearest-class-mean accuracy %.3f)", best[1], epochs,
                    best[0])  # fmt: skip
        model.load_state_dict(best[2]), head.load_state_dict(best[3])
    model.eval(), head.eval()
    return model, head, pd.DataFrame(history, columns=HISTORY_COLUMNS)


def head_accuracy(model: FrozenHead, head: ArcFaceHead, x: np.ndarray, y: np.ndarray) -> float:
    """Closed-set accuracy of the ArcFace argmax on ``x: [M x sum(D)]`` (as the paper mode's validation)."""
    was = model.training, head.training
    model.eval(), head.eval()
    with torch.inference_mode():
        pred = head(model(torch.from_numpy(np.asarray(x, np.float32)))).argmax(1).numpy()
    model.train(was[0]), head.train(was[1])
    return float((pred == np.asarray(y)).mean())


def project(model: FrozenHead, x: np.ndarray) -> np.ndarray:
    """L2-normalised embeddings ``[N x P]`` of frozen features ``x: [N x sum(D)]``."""
    if not len(x):
        return np.zeros((0, model.out_dim), np.float32)
    with torch.inference_mode():
        return l2_normalise(model.eval()(torch.from_numpy(np.asarray(x, np.float32))).numpy())


def fit_on_rows(
    views: np.ndarray, identities: np.ndarray, rows: np.ndarray, dims, cfg, head_cfg, seed: int = 0
) -> FrozenHead:
    """A projection trained (no validation) on the gallery ``rows`` of ``views: [N x V x sum(D)]``."""
    ids = np.asarray(identities, dtype=object)[rows].astype(str)
    classes = sorted(set(ids))
    labels = pd.Categorical(ids, classes).codes.astype(np.int64)
    model, _, _ = train_head(views[rows], labels, len(classes), dims, cfg, head_cfg, None, seed)
    return model


# ------------------------------------------------------------------------------------------------ model file


def save_frozen_model(path, model: FrozenHead, head: ArcFaceHead, classes, settings: Mapping[str, Any]) -> None:
    """The frozen-mode model file: ``mode: frozen``, the settings (backbones, augment, frozen, head, training)
    needed to rebuild features and retrain per split, the class names and the weights."""
    state = {"mode": "frozen", "settings": dict(settings), "dims": model.dims, "proj_dim": model.out_dim
             if not isinstance(model.proj, nn.Identity) else 0, "classes": list(classes),
             "head": {"s": head.s, "m": head.m, "easy_margin": head.easy_margin},
             "model_state": model.state_dict(), "head_state": head.state_dict()}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def is_frozen_model(path) -> bool:
    """True for a file written by :func:`save_frozen_model` (memory-mapped: a fine-tuned model is not read whole)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return isinstance(state, dict) and state.get("mode") == "frozen"


def load_frozen_model(path) -> tuple[FrozenHead, ArcFaceHead, list[str], dict]:
    """``(projection, ArcFace head, classes, settings)`` of a file written by :func:`save_frozen_model`."""
    state = safe_load(path, map_location="cpu", what="frozen dual-backbone model (delete it to retrain)")
    if not isinstance(state, dict) or state.get("mode") != "frozen":
        raise ValueError(f"{path} is not a frozen-mode dual-backbone model (mode: frozen)")
    model = FrozenHead(state["dims"], state["proj_dim"])
    model.load_state_dict(state["model_state"])
    head = ArcFaceHead(model.out_dim, len(state["classes"]), **state["head"])
    head.load_state_dict(state["head_state"])
    return model.eval(), head.eval(), list(state["classes"]), dict(state["settings"])


# ------------------------------------------------------------------------------------------------- training


def table_views(meta: pd.DataFrame, settings: Mapping[str, Any], views: int, cache: str, device: str) -> np.ndarray:
    """Cached views ``[N x views x sum(D)]`` of every row of a metadata table."""
    return _table_views(meta, settings, views, cache, device)[0]


def _table_views(meta, settings, views, cache, device) -> tuple[np.ndarray, list[int]]:
    return cached_views(meta["abspath"].tolist(), meta["sha1"].fillna("").astype(str).tolist(), _orientations(meta),
                        settings["backbones"], settings["augment"], views, cache, device)  # fmt: skip


def train_main(args: argparse.Namespace, meta: pd.DataFrame) -> None:
    """``dual_backbone train --mode frozen``: cache the gallery's views, train, write the model and history."""
    gal = meta[meta["split"] == "database"].reset_index(drop=True)
    frozen = resolve_frozen(json.loads(args.frozen))
    training = json.loads(args.training)
    settings = {"backbones": json.loads(args.backbones), "augment": resolve_augment(json.loads(args.augment)),
                "frozen": frozen, "head": json.loads(args.head), "training": training}  # fmt: skip
    t0 = time.perf_counter()
    views, dims = _table_views(gal, settings, frozen["views"], args.cache, args.device)
    t_cache = time.perf_counter() - t0
    classes = sorted(set(gal["identity"].astype(str)))
    labels = pd.Categorical(gal["identity"].astype(str), classes).codes.astype(np.int64)
    resolved = {**DEFAULT_TRAINING, **training}  # the keys not set keep the fine-tuning mode's defaults
    seed = int(resolved["seed"])
    tr, va = stratified_split(gal["identity"].to_numpy(), float(resolved["val_fraction"]), seed)
    t0 = time.perf_counter()
    model, head, history = train_head(views[tr], labels[tr], len(classes), dims, frozen, settings["head"],
                                      (views[va, 0], labels[va]), seed)  # fmt: skip
    t_train = time.perf_counter() - t0
    logger.info("%d individuals, %d training and %d validation images, %s views each, features %s -> %d-d",
                len(classes), len(tr), len(va), frozen["views"], dims, model.out_dim)  # fmt: skip
    logger.info("views cached in %.1f s, head trained in %.1f s (%d epochs); validation nearest-class-mean "
                "accuracy %.3f with the frozen features, %.3f at best in the trained embedding (ArcFace argmax %.3f)",
                t_cache, t_train, frozen["epochs"], history["val_ncm"].iloc[0], history["val_ncm"].iloc[1:].max(),
                history["val_accuracy"].iloc[1:].max())  # fmt: skip
    save_frozen_model(args.model_out, model, head, classes, {**settings, "dims": dims})
    write_tsv(history.assign(phase=np.where(history["epoch"] == 0, "untrained", "frozen")), args.history)
