"""Dual-backbone ArcFace model (the paper's Sec. 3.6 and step 5): one network per dataset, fine-tuned per species.

Two :class:`workflow.backbones.Backbone` networks (paper: MegaDescriptor-L-384, 1536-d, and MIEW-msv3, 2152-d;
the demo: small CPU backbones) without classification heads, a separate ``BatchNorm1d`` on each output, the
two vectors concatenated (``[B x (D1 + D2)]``, 3688-d in the paper) and an :class:`ArcFaceHead` with per-dataset
``(s, m)`` (paper: (64, 0.5) lynx and turtle, (30, 0.35) salamander). Retrieval: L2-normalised gallery and
query embeddings in a faiss ``IndexFlatIP``, ``k`` nearest neighbours, confidence ``(cos + 1) / 2``.

Training (:func:`train`): stratified 90/10 train/validation split (:func:`stratified_split`), a
``WeightedRandomSampler`` with weight ``1 / count(identity)`` (:func:`make_sampler`), SGD in three phases
(:func:`phase_schedule`): ``warmup`` epochs training the head, the BatchNorms and the top 25% of each backbone's
layers at 1e-2; ``main`` epochs training everything from 5e-3 with cosine annealing; ``final`` epochs at 1e-4.
A checkpoint is written atomically after every epoch and an interrupted run resumes from it.

Augmentations (:func:`build_train_transform`, config mapping, see :data:`DEFAULT_AUGMENT` and
:data:`PAPER_AUGMENT`), applied in this order:

``background``
    ``none`` or ``grabcut``. The paper removes the lynx background with segmentation masks; no segmentation
    model is available offline here, so ``grabcut`` is a **stand-in**: OpenCV GrabCut initialised with a
    central rectangle (``grabcut_margin`` of each side left out), background pixels set to black. It is a
    named option, off unless configured, and it also runs at embedding time so train and test images match.
``rotate_by_orientation``
    ``{orientation value: degrees counter-clockwise}`` (salamander: images rotated by the ``orientation``
    column of the metadata); deterministic, also applied at embedding time. Unlisted values are not rotated.
``crop_scale``
    ``[min, max]`` area scale of ``RandomResizedCrop`` (lynx: ``[0.9, 1.0]``; "moderate": ``[0.7, 1.0]``);
    ``null`` resizes without cropping.
``hflip``
    probability of a horizontal flip (turtle: 0.5).
``color_jitter``
    ``[brightness, contrast, saturation, hue]`` of ``ColorJitter`` (``null``: none).
``coarse_dropout``
    ``{p, max_area}``: with probability ``p`` one rectangle of at most ``max_area`` of the image (paper: 10%)
    is set to 0 (``RandomErasing`` with one hole), after the image is a tensor.

Inputs of the entry point (``python -m workflow.dual_backbone train|predict``): ``results/data/<dataset>.tsv``.
Outputs: ``train``: the model file (``.pt``: backbone specs, head settings, identities, weights) and the
training history (``.tsv``); ``predict``: ``predictions.tsv`` (``image_id, identity, top_identity, top_score``),
``threshold.json``, ``threshold_curve.tsv`` and optionally the embeddings (``.npz``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from workflow._entry import (
    atomic_path,
    read_tsv,
    set_threads,
    setup_logging,
    write_parquet,
    write_stage_outputs,
    write_tsv,
)
from workflow.backbones import Backbone, create_backbone, resolve_device
from workflow.embed import l2_normalise, save_embeddings
from workflow.faiss_search import topk_inner_product
from workflow.images import load_image
from workflow.safe_files import rng_state, safe_load, set_rng_state, workers_for_threads
from workflow.thresholds import apply_threshold, choose_threshold

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"

DEFAULT_AUGMENT: dict[str, Any] = {
    "background": "none",  # none | grabcut (a stand-in for mask-based background removal, see module docstring)
    "grabcut_margin": 0.05,  # share of each side outside the GrabCut initial rectangle
    "grabcut_iterations": 3,  # GrabCut iterations
    "grabcut_max_side": 512,  # GrabCut runs on a copy at most this long (the mask is scaled back)
    "rotate_by_orientation": {},  # {orientation: degrees counter-clockwise}, also at embedding time
    "crop_scale": [0.7, 1.0],  # RandomResizedCrop area scale; null: plain resize
    "hflip": 0.0,  # horizontal flip probability
    "color_jitter": [0.2, 0.2, 0.2, 0.02],  # brightness, contrast, saturation, hue; null: none
    "coarse_dropout": {"p": 0.5, "max_area": 0.1},  # one hole of at most max_area of the image; null: none
}

PAPER_AUGMENT: dict[str, dict[str, Any]] = {
    "LynxID2025": {"background": "grabcut", "crop_scale": [0.9, 1.0]},
    "SalamanderID2025": {
        "rotate_by_orientation": {"top": 0, "bottom": 180, "left": -90, "right": 90},
        "crop_scale": [0.7, 1.0],
    },
    "SeaTurtleID2022": {"crop_scale": [0.7, 1.0], "hflip": 0.5},
}
"""The paper's per-dataset augmentations as overrides of :data:`DEFAULT_AUGMENT` (angles are an assumption)."""

DEFAULT_EPOCHS: dict[str, Any] = {
    "warmup": 2,  # epochs training the head, BatchNorms and the top `top_fraction` of backbone layers
    "main": 10,  # epochs training the full network with cosine annealing
    "final": 2,  # last epochs at lr_final
    "lr_warmup": 1e-2,
    "lr_main": 5e-3,  # start of the cosine schedule, which anneals towards lr_final
    "lr_final": 1e-4,
    "top_fraction": 0.25,
}

DEFAULT_TRAINING: dict[str, Any] = {
    "batch_size": 16,
    "val_fraction": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "seed": 0,
    "num_workers": 0,  # DataLoader worker processes (decoding, augmentation and GrabCut run there)
    "precision": "fp32",  # fp32 | bf16 (autocast of the forward pass and loss; weights and optimizer stay fp32)
}


# ------------------------------------------------------------------------------------------------------- model


class DualBackbone(nn.Module):
    """Backbones without heads, a ``BatchNorm1d`` per branch, concatenated: ``x: [B x 3 x H x W] -> [B x sum(D)]``.

    ``x`` holds RGB values in [0, 1] (not normalised): each branch resizes it to its own ``spec.input_size``
    and normalises it with its own ``spec.mean``/``spec.std``, so two backbones with different preprocessing
    share one augmented image. The paper uses two branches; any number >= 1 works.
    """

    def __init__(self, backbones: Sequence[Backbone]):
        super().__init__()
        if len(backbones) < 1:
            raise ValueError("DualBackbone needs at least one backbone, got none")
        self.branches = nn.ModuleList(backbones)
        self.norms = nn.ModuleList(nn.BatchNorm1d(b.embed_dim) for b in backbones)
        for i, b in enumerate(backbones):
            self.register_buffer(f"mean{i}", torch.tensor(b.spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer(f"std{i}", torch.tensor(b.spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    @classmethod
    def from_config(cls, configs: Sequence[str | Mapping[str, Any]]) -> DualBackbone:
        """Build from backbone configurations (registered names or mappings, see :func:`create_backbone`)."""
        if isinstance(configs, str | Mapping) or len(configs) < 1:
            raise ValueError(f"backbones must be a list of backbone configurations, got {configs!r}")
        return cls([create_backbone(c) for c in configs])

    @property
    def embed_dim(self) -> int:
        return sum(b.embed_dim for b in self.branches)

    @property
    def input_size(self) -> int:
        """Largest input side of the branches: the size images are augmented to."""
        return max(int(b.spec.input_size) for b in self.branches)

    def specs(self) -> list[dict[str, Any]]:
        """The branches' resolved specs as plain mappings (rebuild with ``pretrained: false`` + state dict)."""
        return [b.spec.to_config() for b in self.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"DualBackbone expects x: [B x 3 x H x W] in [0, 1], got {tuple(x.shape)}")
        out = []
        for i, (branch, norm) in enumerate(zip(self.branches, self.norms)):
            size = int(branch.spec.input_size)
            xi = x if x.shape[-2:] == (size, size) else F.interpolate(x, (size, size), mode="bilinear")
            xi = (xi - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")
            out.append(norm(branch(xi)))
        return torch.cat(out, dim=1)


class ArcFaceHead(nn.Module):
    """Additive angular margin (ArcFace) logits: ``x: [B x D]``, ``labels: [B]`` -> ``[B x C]``.

    ``cos = normalise(x) @ normalise(W).T``; the target logit becomes ``cos(theta + m)``, all logits are scaled
    by ``s``. ``cos(theta + m)`` is not monotonic past ``theta = pi - m``, so (the usual handling, as in
    insightface) where ``cos <= cos(pi - m)`` the target logit is ``cos - m * sin(pi - m)`` instead; with
    ``easy_margin`` the margin applies only where ``cos > 0``. Without labels the logits are ``s * cos``.
    """

    def __init__(self, in_dim: int, n_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False):
        super().__init__()
        if n_classes < 1 or in_dim < 1:
            raise ValueError(f"ArcFaceHead needs in_dim >= 1 and n_classes >= 1, got {in_dim}, {n_classes}")
        if not (s > 0 and 0 <= m < math.pi / 2):
            raise ValueError(f"ArcFace needs s > 0 and 0 <= m < pi/2, got s={s}, m={m}")
        self.s, self.m, self.easy_margin = float(s), float(m), bool(easy_margin)
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(x)
        if labels is None:
            return self.s * cos
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=0.0))
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)
        phi = torch.where(cos > 0, phi, cos) if self.easy_margin else torch.where(cos > self.th, phi, cos - self.mm)
        onehot = F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
        return self.s * (onehot * phi + (1.0 - onehot) * cos)


# ------------------------------------------------------------------------------------------------ augmentation


class GrabCutBackground:
    """Stand-in background removal: OpenCV GrabCut from a central rectangle; background pixels set to black.

    GrabCut costs about a second per photo on one core, and training applies it to every image in every epoch,
    so the mask is computed on a copy whose longer side is at most ``max_side`` (the networks see 384-440 px)
    and kept per process (:attr:`masks`, keyed by the parameters and a digest of the pixels, shared by every
    instance): each image is segmented once per process, not once per epoch. ``warm`` fills the cache before
    DataLoader worker processes are forked, so that they inherit it.
    """

    masks: dict[tuple, tuple[int, int, np.ndarray] | None] = {}
    max_cached = 100_000

    def __init__(self, margin: float = 0.05, iterations: int = 3, max_side: int = 512):
        self.margin, self.iterations, self.max_side = float(margin), int(iterations), int(max_side)

    def mask(self, arr: np.ndarray) -> np.ndarray | None:
        """Foreground mask ``[H x W]`` bool of an RGB array ``[H x W x 3]``; None where GrabCut cannot run."""
        import hashlib

        arr = np.ascontiguousarray(arr)
        key = (self.margin, self.iterations, self.max_side, arr.shape, hashlib.sha1(arr.data).hexdigest())
        if key not in self.masks:
            if len(self.masks) >= self.max_cached:
                self.masks.clear()
            self.masks[key] = self._segment(arr)
        hit = self.masks[key]
        if hit is None:
            return None
        h, w, packed = hit
        small = np.unpackbits(packed, count=h * w).reshape(h, w).astype(bool)
        if (h, w) == arr.shape[:2]:
            return small
        big = Image.fromarray(small.astype(np.uint8) * 255).resize((arr.shape[1], arr.shape[0]), Image.NEAREST)
        return np.asarray(big) > 0

    def _segment(self, arr: np.ndarray) -> tuple[int, int, np.ndarray] | None:
        import cv2

        h, w = arr.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1:
            w, h = max(1, round(w * scale)), max(1, round(h * scale))
            arr = np.asarray(Image.fromarray(arr).resize((w, h), Image.BILINEAR))
        dx, dy = max(1, int(w * self.margin)), max(1, int(h * self.margin))
        if w - 2 * dx < 2 or h - 2 * dy < 2:
            return None
        mask = np.zeros((h, w), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(arr[..., ::-1].copy(), mask, (dx, dy, w - 2 * dx, h - 2 * dy), bgd, fgd, self.iterations,
                        cv2.GC_INIT_WITH_RECT)  # fmt: skip
        except cv2.error:
            return None  # degenerate image (e.g. one colour): keep it whole
        keep = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        return (h, w, np.packbits(keep)) if keep.any() else None

    def __call__(self, img: Image.Image) -> Image.Image:
        arr = np.asarray(img.convert("RGB"))
        keep = self.mask(arr)
        if keep is None:
            return img
        return Image.fromarray(np.where(keep[..., None], arr, 0).astype(np.uint8))


def resolve_augment(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULT_AUGMENT` updated with ``cfg``; unknown keys and bad values raise ``ValueError``."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_AUGMENT))
    if unknown:
        raise ValueError(f"unknown augmentation key(s) {unknown}; known: {sorted(DEFAULT_AUGMENT)}")
    out = {**DEFAULT_AUGMENT, **cfg}
    if out["background"] not in ("none", "grabcut"):
        raise ValueError(f"augment background must be 'none' or 'grabcut', got {out['background']!r}")
    if out["crop_scale"] is not None:
        lo, hi = (float(v) for v in out["crop_scale"])
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment crop_scale must be [min, max] with 0 < min <= max <= 1, got {out['crop_scale']}")
    if not 0 <= float(out["hflip"]) <= 1:
        raise ValueError(f"augment hflip must be a probability, got {out['hflip']!r}")
    if out["color_jitter"] is not None and len(out["color_jitter"]) != 4:
        raise ValueError(
            f"augment color_jitter must be [brightness, contrast, saturation, hue], got {out['color_jitter']}"
        )
    drop = out["coarse_dropout"]
    if drop is not None and (set(drop) != {"p", "max_area"} or not 0 < float(drop["max_area"]) <= 1):
        raise ValueError(f"augment coarse_dropout must be {{p, max_area}} with 0 < max_area <= 1, got {drop!r}")
    if not isinstance(out["rotate_by_orientation"], Mapping):
        raise ValueError(
            f"augment rotate_by_orientation must map orientation -> degrees, got {out['rotate_by_orientation']!r}"
        )
    return out


def _prepare(cfg: Mapping[str, Any]) -> Callable[[Image.Image, str], Image.Image]:
    """The deterministic part (orientation rotation, background removal), shared by training and embedding."""
    angles = {str(k): float(v) for k, v in cfg["rotate_by_orientation"].items()}
    background = GrabCutBackground(cfg["grabcut_margin"], cfg["grabcut_iterations"], cfg["grabcut_max_side"])
    use_background = cfg["background"] == "grabcut"

    def prepare(img: Image.Image, orientation: str = "") -> Image.Image:
        angle = angles.get(str(orientation), 0.0)
        if angle:
            img = img.rotate(angle, expand=True)
        return background(img) if use_background else img

    return prepare


def warm_background(paths: Sequence[str], orientations: Sequence[str], cfg: Mapping[str, Any] | None) -> None:
    """Segment every image once in this process (GrabCut masks are cached per process, see
    :class:`GrabCutBackground`), so that DataLoader workers forked later inherit the masks. No-op without
    ``background: grabcut``."""
    cfg = resolve_augment(cfg)
    if cfg["background"] != "grabcut":
        return
    prepare, start = _prepare(cfg), time.perf_counter()
    for i, (path, orientation) in enumerate(zip(paths, orientations), 1):
        prepare(load_image(path), orientation)
        if i % 500 == 0 or i == len(paths):
            logger.info("background masks: %d/%d images, %.1f s", i, len(paths), time.perf_counter() - start)


def build_train_transform(cfg: Mapping[str, Any] | None, size: int) -> Callable[[Image.Image, str], torch.Tensor]:
    """Training transform ``(PIL image, orientation) -> [3 x size x size]`` float in [0, 1] (see module docstring)."""
    cfg = resolve_augment(cfg)
    prepare = _prepare(cfg)
    ops: list[Any] = []
    if cfg["crop_scale"] is not None:
        ops.append(v2.RandomResizedCrop(size, scale=tuple(cfg["crop_scale"]), antialias=True))
    else:
        ops.append(v2.Resize((size, size), antialias=True))
    if cfg["hflip"]:
        ops.append(v2.RandomHorizontalFlip(float(cfg["hflip"])))
    if cfg["color_jitter"] is not None:
        ops.append(v2.ColorJitter(*[float(v) for v in cfg["color_jitter"]]))
    ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    drop = cfg["coarse_dropout"]
    if drop is not None and float(drop["p"]) > 0:
        max_area = float(drop["max_area"])
        ops.append(v2.RandomErasing(p=float(drop["p"]), scale=(min(0.02, max_area), max_area), value=0))
    pipeline = v2.Compose(ops)
    return lambda img, orientation="": pipeline(prepare(img, orientation))


def build_eval_transform(cfg: Mapping[str, Any] | None, size: int) -> Callable[[Image.Image, str], torch.Tensor]:
    """Embedding transform: the deterministic steps, then a resize to ``size x size`` in [0, 1]."""
    cfg = resolve_augment(cfg)
    prepare = _prepare(cfg)
    pipeline = v2.Compose(
        [v2.Resize((size, size), antialias=True), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    )
    return lambda img, orientation="": pipeline(prepare(img, orientation))


class ImageDataset(Dataset):
    """``(transform(image, orientation) [3 x S x S], label)`` for each row; images read by ``load_image``."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], orientations: Sequence[str] | None, transform):
        if len(paths) != len(labels) or (orientations is not None and len(orientations) != len(paths)):
            raise ValueError("paths, labels and orientations must have the same length")
        self.paths, self.labels = list(paths), [int(v) for v in labels]
        self.orientations = [str(o) for o in orientations] if orientations is not None else [""] * len(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return self.transform(load_image(self.paths[i]), self.orientations[i]), self.labels[i]


# ---------------------------------------------------------------------------------------------- data splitting


def stratified_split(
    identities: Sequence[str], val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train [N1], val [N2])`` with ``round(val_fraction * N)`` validation images in all (at least one).

    Each individual's share is proportional to its size (largest remainders, ties broken at random), and every
    individual keeps at least one training image, so an individual with one image stays in training. This keeps
    a real validation set when most individuals have two or three images (salamanders, dog faces), where
    rounding per individual would hold out nothing.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    identities = np.asarray(identities, dtype=object)
    rng = np.random.default_rng(seed)
    groups = [rng.permutation(np.flatnonzero(identities == ident)) for ident in sorted(set(identities))]
    sizes = np.array([len(g) for g in groups], np.int64)
    room = np.maximum(sizes - 1, 0)  # the most an individual can give
    target = int(round(val_fraction * len(identities))) if val_fraction > 0 else 0
    target = min(max(target, 1 if val_fraction > 0 else 0), int(room.sum()))
    quota = val_fraction * sizes
    take = np.minimum(np.floor(quota).astype(np.int64), room)
    tiebreak = rng.random(len(groups))
    while take.sum() < target:
        open_ = np.flatnonzero(take < room)
        # largest remainder first (size breaks ties towards larger individuals, then chance)
        order = open_[np.lexsort((tiebreak[open_], sizes[open_], quota[open_] - take[open_]))[::-1]]
        take[order[: target - int(take.sum())]] += 1
    val = [r for g, t in zip(groups, take) for r in g[:t]]
    train = [r for g, t in zip(groups, take) for r in g[t:]]
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64))


def make_sampler(labels: Sequence[int], seed: int = 0) -> WeightedRandomSampler:
    """``WeightedRandomSampler`` drawing ``len(labels)`` rows with replacement, weight ``1 / count(identity)``."""
    labels = list(labels)
    if not labels:
        raise ValueError("cannot sample from an empty training set")
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[v] for v in labels], dtype=torch.double)
    return WeightedRandomSampler(weights, len(labels), replacement=True, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class EpochPlan:
    """One epoch of the schedule: 1-based ``epoch``, ``phase`` name, learning rate and what is trained."""

    epoch: int
    phase: str  # warmup | main | final
    lr: float
    trainable: str  # "top" (head, BatchNorms, top layers) | "all"


def resolve_epochs(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_EPOCHS))
    if unknown:
        raise ValueError(f"unknown epochs key(s) {unknown}; known: {sorted(DEFAULT_EPOCHS)}")
    out = {**DEFAULT_EPOCHS, **cfg}
    for key in ("warmup", "main", "final"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0:
            raise ValueError(f"epochs {key} must be a non-negative integer, got {out[key]!r}")
    if out["warmup"] + out["main"] + out["final"] < 1:
        raise ValueError("epochs warmup + main + final must be at least 1")
    if not 0 < float(out["top_fraction"]) <= 1:
        raise ValueError(f"epochs top_fraction must be in (0, 1], got {out['top_fraction']!r}")
    return out


def phase_schedule(epochs_cfg: Mapping[str, Any] | None) -> list[EpochPlan]:
    """The three-phase SGD schedule, one :class:`EpochPlan` per epoch.

    ``warmup`` epochs at ``lr_warmup`` training the top layers only; ``main`` epochs training all with
    ``lr_final + (lr_main - lr_final) * (1 + cos(pi * i / main)) / 2`` for ``i = 0 .. main-1``; ``final`` epochs at
    ``lr_final`` training all.
    """
    cfg = resolve_epochs(epochs_cfg)
    plan, epoch = [], 0
    for _ in range(cfg["warmup"]):
        epoch += 1
        plan.append(EpochPlan(epoch, "warmup", float(cfg["lr_warmup"]), "top"))
    lo, hi = float(cfg["lr_final"]), float(cfg["lr_main"])
    for i in range(cfg["main"]):
        epoch += 1
        plan.append(EpochPlan(epoch, "main", lo + (hi - lo) * (1 + math.cos(math.pi * i / cfg["main"])) / 2, "all"))
    for _ in range(cfg["final"]):
        epoch += 1
        plan.append(EpochPlan(epoch, "final", lo, "all"))
    return plan


def _layers(module: nn.Module) -> list[nn.Module]:
    """Modules holding parameters directly, in registration order (the "layers" the top fraction counts)."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def set_trainable(model: DualBackbone, head: nn.Module, trainable: str, top_fraction: float = 0.25) -> None:
    """``all``: every parameter; ``top``: the head, the BatchNorms and the last ``top_fraction`` of each branch."""
    if trainable == "all":
        for p in [*model.parameters(), *head.parameters()]:
            p.requires_grad_(True)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*model.norms.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    for branch in model.branches:
        layers = _layers(branch)
        for layer in layers[len(layers) - max(1, math.ceil(top_fraction * len(layers))) :]:
            for p in layer.parameters(recurse=False):
                p.requires_grad_(True)


# --------------------------------------------------------------------------------------------------- training


def _plan_key(plan: Sequence[EpochPlan]) -> list[list]:
    return [[p.epoch, p.phase, round(p.lr, 12), p.trainable] for p in plan]


def evaluate_accuracy(model: DualBackbone, head: ArcFaceHead, loader: DataLoader, device: str) -> float:
    """Closed-set accuracy of ``argmax`` of the head's cosine logits; NaN for an empty loader."""
    was = model.training, head.training
    model.eval(), head.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            pred = head(model(x.to(device))).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    model.train(was[0]), head.train(was[1])
    return correct / total if total else float("nan")


def train(
    model: DualBackbone,
    head: ArcFaceHead,
    train_set: Dataset,
    val_set: Dataset | None,
    train_labels: Sequence[int],
    *,
    checkpoint_dir: str | Path,
    epochs_cfg: Mapping[str, Any] | None = None,
    training_cfg: Mapping[str, Any] | None = None,
    device: str = "cpu",
    stop_after: int | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Train ``model`` and ``head`` in place on the three-phase schedule; returns the history (one row per epoch).

    After each epoch ``checkpoint_dir/last.pt`` is replaced atomically (model, head, optimizer, schedule,
    epoch, history, RNG states: tensors and plain data, loaded with ``weights_only=True``); when it exists at the
    start, training resumes after its epoch (the schedule must be the same). ``stop_after`` ends this call after
    that many epochs in total (for time-boxed jobs; rerunning resumes). ``threads``: the job's threads, which cap
    the DataLoader workers at ``threads - 1``. The log gets epoch, phase, lr, loss and validation accuracy.
    """
    cfg = {**DEFAULT_TRAINING, **(training_cfg or {})}
    unknown = sorted(set(cfg) - set(DEFAULT_TRAINING))
    if unknown:
        raise ValueError(f"unknown training key(s) {unknown}; known: {sorted(DEFAULT_TRAINING)}")
    if cfg["precision"] not in ("fp32", "bf16"):
        raise ValueError(f"training precision must be 'fp32' or 'bf16', got {cfg['precision']!r}")
    epochs = resolve_epochs(epochs_cfg)
    plan = phase_schedule(epochs)
    device = resolve_device(device)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")
    model.to(device), head.to(device)
    optimizer = torch.optim.SGD(
        [*model.parameters(), *head.parameters()],
        lr=plan[0].lr,
        momentum=float(cfg["momentum"]),
        weight_decay=float(cfg["weight_decay"]),
    )
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    history: list[dict[str, Any]] = []
    done = 0
    torch.manual_seed(int(cfg["seed"]))
    if ckpt_path.exists():
        state = safe_load(ckpt_path, map_location=device, what="resume checkpoint (delete it to restart training)")
        if state["plan"] != _plan_key(plan):
            raise ValueError(
                f"checkpoint {ckpt_path} was written for another schedule ({len(state['plan'])} epochs); "
                "delete it or restore the epochs configuration it was trained with"
            )
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        done, history = int(state["epoch"]), list(state["history"])
        logger.info("resuming from %s after epoch %d/%d", ckpt_path, done, len(plan))
    batch_size = int(cfg["batch_size"])
    loader_kw = {"batch_size": batch_size, "num_workers": workers_for_threads(cfg["num_workers"], threads)}
    val_loader = DataLoader(val_set, shuffle=False, **loader_kw) if val_set is not None and len(val_set) else None
    criterion = nn.CrossEntropyLoss()
    for step in plan[done:]:
        if stop_after is not None and step.epoch > stop_after:
            break
        start = time.perf_counter()
        set_trainable(model, head, step.trainable, float(epochs["top_fraction"]))
        for group in optimizer.param_groups:
            group["lr"] = step.lr
        sampler = make_sampler(train_labels, seed=int(cfg["seed"]) + step.epoch)
        # BatchNorm needs two or more samples: drop a last batch of one.
        loader = DataLoader(train_set, sampler=sampler, drop_last=len(train_set) % batch_size == 1, **loader_kw)
        model.train(), head.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with autocast:  # the backbones in bf16 when asked; the ArcFace margin and the loss stay in fp32
                emb = model(x)
            loss = criterion(head(emb.float(), y), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        val_acc = evaluate_accuracy(model, head, val_loader, device) if val_loader else float("nan")
        row = {"epoch": step.epoch, "phase": step.phase, "lr": step.lr, "loss": total / max(n, 1),
               "val_accuracy": val_acc, "seconds": time.perf_counter() - start}  # fmt: skip
        history.append(row)
        logger.info("epoch %d/%d (%s, lr %.2e): loss %.4f, validation accuracy %.3f, %.1f s",
                    step.epoch, len(plan), step.phase, step.lr, row["loss"], val_acc, row["seconds"])  # fmt: skip
        state = {"model": model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                 "plan": _plan_key(plan), "epoch": step.epoch, "history": history, "rng": rng_state()}  # fmt: skip
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)
    for p in [*model.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    return pd.DataFrame(history, columns=["epoch", "phase", "lr", "loss", "val_accuracy", "seconds"])


# -------------------------------------------------------------------------------------------------- retrieval


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
    """faiss flat inner-product search of L2-normalised rows (on the GPU of a CUDA ``device`` where faiss has GPU
    support: workflow/faiss_search.py): ``query [Q x D]``, ``gallery [G x D]``.

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


# ---------------------------------------------------------------------------------------------- model files


def save_model(path: str | Path, model: DualBackbone, head: ArcFaceHead, classes: Sequence[str], augment) -> None:
    """Everything :func:`load_model` needs: branch specs, head settings, class names, augmentations, weights."""
    state = {"specs": model.specs(), "head": {"s": head.s, "m": head.m, "easy_margin": head.easy_margin},
             "classes": list(classes), "augment": dict(augment or {}),
             "model_state": model.state_dict(), "head_state": head.state_dict()}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: str | Path) -> tuple[DualBackbone, ArcFaceHead, list[str], dict]:
    """Rebuild a model file: branches from their specs with ``pretrained: false``, then the saved weights (strict)."""
    state = safe_load(path, map_location="cpu", what="dual-backbone model (delete it to retrain)")
    model = DualBackbone([create_backbone({**spec, "pretrained": False}) for spec in state["specs"]])
    model.load_state_dict(state["model_state"])
    head = ArcFaceHead(model.embed_dim, len(state["classes"]), **state["head"])
    head.load_state_dict(state["head_state"])
    return model.eval(), head.eval(), list(state["classes"]), dict(state["augment"])


# ------------------------------------------------------------------------------------------------ entry point


def _orientations(meta: pd.DataFrame) -> list[str]:
    if "orientation" not in meta:
        return [""] * len(meta)
    return meta["orientation"].fillna("").astype(str).tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fine-tune a dual-backbone ArcFace model on the gallery of one dataset")
    p.add_argument("--backbones", required=True, help="JSON list of backbone configurations")
    p.add_argument("--head", default="{}", help='JSON {"s": 64, "m": 0.5, "easy_margin": false}')
    p.add_argument("--augment", default="{}", help="JSON augmentation overrides (see DEFAULT_AUGMENT)")
    p.add_argument("--epochs", default="{}", help="JSON epochs/learning rates (see DEFAULT_EPOCHS)")
    p.add_argument("--training", default="{}", help="JSON batch_size, val_fraction, seed, ... (DEFAULT_TRAINING)")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--model-out", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--mode", choices=["finetune", "frozen"], default="finetune", help="see dual_backbone_frozen")
    p.add_argument("--frozen", default="{}", help="JSON of workflow.dual_backbone_frozen.DEFAULT_FROZEN overrides")
    p = sub.add_parser("predict", help="embed gallery and queries, retrieve, threshold")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--threshold", required=True, help="JSON: a number, 'auto' or {dataset: value}")
    p.add_argument("--tuning", required=True, help="JSON of workflow.thresholds.tune_threshold kwargs")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--predictions", required=True)
    p.add_argument("--threshold-out", required=True)
    p.add_argument("--curve", required=True)
    p.add_argument("--embeddings-out")
    p.add_argument("--pseudo-out", help="per-split held-out pseudo-query predictions (.parquet)")
    for p in sub.choices.values():
        p.add_argument("--cache", default="resources/cache/embeddings", help="view cache of the frozen mode")
        p.add_argument("--metadata", required=True)
        p.add_argument("--device", default="auto")
        p.add_argument("--threads", type=int)
        p.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    set_threads(args.threads)
    meta = read_tsv(args.metadata)
    gal = meta[meta["split"] == "database"].reset_index(drop=True)
    from workflow import dual_backbone_frozen as frozen  # the frozen mode (CPU) lives in its own module

    if args.command == "train" and args.mode == "frozen":
        return frozen.train_main(args, meta)
    if args.command == "predict" and frozen.is_frozen_model(args.model):
        return frozen.predict_main(args, meta)
    if args.command == "train":
        augment, training = json.loads(args.augment), {**DEFAULT_TRAINING, **json.loads(args.training)}
        training["num_workers"] = workers_for_threads(training["num_workers"], args.threads)
        # seed before building: randomly initialised branches and the ArcFace head must be reproducible
        torch.manual_seed(int(training["seed"]))
        model = DualBackbone.from_config(json.loads(args.backbones))
        classes = sorted(set(gal["identity"]))
        labels = gal["identity"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        head = ArcFaceHead(model.embed_dim, len(classes), **json.loads(args.head))
        tr, va = stratified_split(gal["identity"].to_numpy(), float(training["val_fraction"]), int(training["seed"]))
        paths, orient = gal["abspath"].tolist(), _orientations(gal)
        size = model.input_size
        train_set = ImageDataset([paths[i] for i in tr], labels[tr], [orient[i] for i in tr],
                                 build_train_transform(augment, size))  # fmt: skip
        val_set = ImageDataset([paths[i] for i in va], labels[va], [orient[i] for i in va],
                               build_eval_transform(augment, size))  # fmt: skip
        logger.info("%d individuals, %d training and %d validation images, embedding %d-d",
                    len(classes), len(tr), len(va), model.embed_dim)  # fmt: skip
        if int(training["num_workers"]) > 0:  # workers are forked every epoch: give them the masks
            warm_background([paths[i] for i in tr], [orient[i] for i in tr], augment)
        history = train(model, head, train_set, val_set, labels[tr], checkpoint_dir=args.checkpoint_dir,
                        epochs_cfg=json.loads(args.epochs), training_cfg=training, device=args.device,
                        threads=args.threads)  # fmt: skip
        save_model(args.model_out, model.cpu(), head.cpu(), classes, augment)
        write_tsv(history, args.history)
        # the resume checkpoint (model + optimizer state: 2 GB for the paper's branches) has served its purpose
        (Path(args.checkpoint_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)
        return

    model, _, _, augment = load_model(args.model)
    qry = meta[meta["split"] == "query"].reset_index(drop=True)
    emb = embed(model, meta["abspath"].tolist(), _orientations(meta), augment, args.batch_size, args.device)
    is_gal = (meta["split"] == "database").to_numpy()
    preds, info, curve = predict(qry["image_id"].to_numpy(), emb[~is_gal], emb[is_gal], gal["identity"].to_numpy(),
                                 json.loads(args.threshold), json.loads(args.tuning), args.dataset, args.k,
                                 resolve_device(args.device))  # fmt: skip
    if args.embeddings_out:
        save_embeddings(args.embeddings_out, meta["image_id"].to_numpy(), emb)
    if args.pseudo_out:  # judged on its own training images, the fine-tuned model abstains from `auto` choices
        write_parquet(frozen.abstaining_pseudo(gal["identity"].to_numpy(), gal["image_id"].to_numpy(),
                                               json.loads(args.tuning)), args.pseudo_out)  # fmt: skip
    write_stage_outputs(args.dataset, preds, info, curve, args.predictions, args.threshold_out, args.curve)


if __name__ == "__main__":
    main()
