"""Training data of the dual-backbone model: augmentations (GrabCut stand-in included), dataset, split, sampler.

Inputs: image paths, integer labels and orientations of the gallery. Outputs: ``(image [3 x S x S], label)``
samples, a stratified train/validation split and a class-balanced sampler. See the package docstring for
the augmentation options.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, WeightedRandomSampler
from torchvision.transforms import v2

from workflow.images import load_image

logger = logging.getLogger(__name__)

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


def with_defaults(cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``defaults`` updated with ``cfg``; a key of ``cfg`` that ``defaults`` lacks raises ``ValueError``."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **cfg}


def resolve_augment(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULT_AUGMENT` updated with ``cfg``; unknown keys and bad values raise ``ValueError``."""
    out = with_defaults(cfg, DEFAULT_AUGMENT, "augmentation")
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


def _orientations(meta: pd.DataFrame) -> list[str]:
    if "orientation" not in meta:
        return [""] * len(meta)
    return meta["orientation"].fillna("").astype(str).tolist()
