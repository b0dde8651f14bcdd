"""Local features of one image and their ``.npz`` cache (one file per shard, reused by every pair).

Inputs: :class:`LocalFeatures` from a matcher's ``extract``.
Outputs: one ``.npz`` per shard (:func:`save_features`), read back by :func:`load_features`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workflow.stage_io import atomic_path

FEATURES_FORMAT_VERSION = 1

Correspondences = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(kpts0: [M x 2] float32, kpts1: [M x 2] float32, confidence: [M] float32)`` for one pair."""


@dataclass
class LocalFeatures:
    """Local features of one image, in the matcher's resized frame.

    Attributes:
        keypoints: ``[N x 2]`` float32 pixel ``(x, y)``.
        descriptors: ``[N x D]`` float32 (uint8 packed bits for binary descriptors: ORB, AKAZE).
        scores: ``[N]`` float32 detector scores.
        image_size: ``(H, W)`` of the frame the keypoints live in (after resizing).
        original_size: ``(H, W)`` of the input image; keypoints map back by ``W0 / W`` and ``H0 / H``.
        scales: ``[N]`` float32 keypoint scales, only for extractors that give them (SIFT), else None.
        oris: ``[N]`` float32 keypoint orientations in radians, same rule as ``scales``.
        image: ``[H x W]`` uint8 preprocessed grayscale image, only for detector-free LoFTR (which has
            no keypoints: ``keypoints`` is then ``[0 x 2]``), else None.
        extractor: name of the matcher that extracted them ("" if unknown); matching checks it.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int]
    original_size: tuple[int, int] | None = None
    scales: np.ndarray | None = None
    oris: np.ndarray | None = None
    image: np.ndarray | None = None
    extractor: str = ""

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        n = len(self.keypoints)
        desc = np.asarray(self.descriptors)
        if desc.dtype != np.uint8:
            desc = desc.astype(np.float32, copy=False)
        if desc.ndim != 2 or desc.shape[0] != n:
            raise ValueError(f"descriptors must be [N x D] with N={n} keypoints, got shape {desc.shape}")
        self.descriptors = desc
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.scores) != n:
            raise ValueError(f"scores must be [N] with N={n}, got {len(self.scores)}")
        for name in ("scales", "oris"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float32).reshape(-1)
                if len(value) != n:
                    raise ValueError(f"{name} must be [N] with N={n}, got {len(value)}")
                setattr(self, name, value)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.original_size is None:
            self.original_size = self.image_size
        self.original_size = (int(self.original_size[0]), int(self.original_size[1]))
        if self.image is not None:
            self.image = np.asarray(self.image, dtype=np.uint8)
            if self.image.shape != self.image_size:
                raise ValueError(f"image must be [H x W] = {self.image_size}, got {self.image.shape}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)


def save_features(path: str | Path, image_ids: Sequence[str], feats: Sequence[LocalFeatures]) -> None:
    """Store features of many images in one ``.npz``: concatenated arrays plus per-image offsets.

    Layout: ``image_ids [I]``, ``offsets [I + 1]`` (rows of image ``i`` are ``offsets[i]:offsets[i+1]``),
    ``keypoints [K x 2]``, ``descriptors [K x D]``, ``scores [K]``, ``image_sizes [I x 2]``,
    ``original_sizes [I x 2]``, and when present ``scales [K]``, ``oris [K]``, ``image_data [sum H*W]``.
    Written atomically (a killed writer leaves no file that looks finished).
    """
    ids = [str(i) for i in image_ids]
    if len(ids) != len(feats):
        raise ValueError(f"{len(ids)} image ids but {len(feats)} feature sets")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"duplicate image ids in the features to save, e.g. {dup}")
    dims = {f.descriptors.shape[1] for f in feats if f.num_keypoints > 0}
    dtypes = {f.descriptors.dtype for f in feats if f.num_keypoints > 0}
    if len(dims) > 1 or len(dtypes) > 1:
        raise ValueError(f"features mix descriptor sizes {sorted(dims)} / dtypes {sorted(map(str, dtypes))}")
    dim = dims.pop() if dims else (feats[0].descriptors.shape[1] if feats else 0)
    dtype = dtypes.pop() if dtypes else (feats[0].descriptors.dtype if feats else np.dtype(np.float32))
    counts = np.array([f.num_keypoints for f in feats], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    extractors = {f.extractor for f in feats}
    if len(extractors) > 1:
        raise ValueError(f"features come from different extractors {sorted(extractors)}; store them apart")
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(FEATURES_FORMAT_VERSION),
        "extractor": np.array(extractors.pop() if extractors else ""),
        "image_ids": np.array(ids, dtype=np.str_),
        "offsets": offsets,
        "keypoints": _concat([f.keypoints for f in feats], (0, 2), np.float32),
        "descriptors": _concat([f.descriptors.reshape(f.num_keypoints, dim) for f in feats], (0, dim), dtype),
        "scores": _concat([f.scores for f in feats], (0,), np.float32),
        "image_sizes": np.array([f.image_size for f in feats], dtype=np.int64).reshape(-1, 2),
        "original_sizes": np.array([f.original_size for f in feats], dtype=np.int64).reshape(-1, 2),
    }
    for name in ("scales", "oris"):
        present = [getattr(f, name) is not None for f in feats]
        if any(present):
            if not all(present):
                raise ValueError(f"some features have {name} and others not")
            arrays[name] = _concat([getattr(f, name) for f in feats], (0,), np.float32)
    has_image = [f.image is not None for f in feats]
    if any(has_image):
        if not all(has_image):
            raise ValueError("some features carry a preprocessed image and others not")
        arrays["image_data"] = _concat([f.image.reshape(-1) for f in feats], (0,), np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def load_features(path: str | Path, image_ids: Sequence[str] | None = None) -> dict[str, LocalFeatures]:
    """Read a file written by :func:`save_features`.

    Args:
        path: the ``.npz`` file.
        image_ids: keep only these images (all if None); a missing id raises ``KeyError``.

    Returns:
        ``{image_id: LocalFeatures}``; arrays are views into the file's concatenated arrays.
    """
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    version = int(arrays.get("format_version", -1))
    if version != FEATURES_FORMAT_VERSION:
        raise ValueError(f"{path}: features format {version}, expected {FEATURES_FORMAT_VERSION}; re-extract")
    ids = [str(i) for i in arrays["image_ids"]]
    index = {image_id: i for i, image_id in enumerate(ids)}
    wanted = ids if image_ids is None else [str(i) for i in image_ids]
    missing = [i for i in wanted if i not in index]
    if missing:
        raise KeyError(f"{path}: no features for {len(missing)} image(s), e.g. {missing[:5]}")
    offsets, sizes = arrays["offsets"], arrays["image_sizes"]
    image_offsets = np.concatenate([[0], np.cumsum(sizes[:, 0] * sizes[:, 1])])
    extractor = str(arrays["extractor"])
    out: dict[str, LocalFeatures] = {}
    for image_id in wanted:
        i = index[image_id]
        a, b = int(offsets[i]), int(offsets[i + 1])
        h, w = int(sizes[i, 0]), int(sizes[i, 1])
        image = None
        if "image_data" in arrays:
            image = arrays["image_data"][image_offsets[i] : image_offsets[i + 1]].reshape(h, w)
        out[image_id] = LocalFeatures(
            keypoints=arrays["keypoints"][a:b],
            descriptors=arrays["descriptors"][a:b],
            scores=arrays["scores"][a:b],
            image_size=(h, w),
            original_size=(int(arrays["original_sizes"][i, 0]), int(arrays["original_sizes"][i, 1])),
            scales=arrays["scales"][a:b] if "scales" in arrays else None,
            oris=arrays["oris"][a:b] if "oris" in arrays else None,
            image=image,
            extractor=extractor,
        )
    return out


def _concat(parts: Sequence[np.ndarray], empty_shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty_shape, dtype=dtype)


def _empty_correspondences() -> Correspondences:
    return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
