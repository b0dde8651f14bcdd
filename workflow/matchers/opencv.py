"""Classical OpenCV matchers (no learned weights, never import torch): ``rootsift``, ``orb``, ``akaze``.

Inputs: uint8 RGB images ``[H x W x 3]``. Outputs: :class:`~workflow.matchers.features.LocalFeatures`
(float32 RootSIFT or uint8 packed binary descriptors) and nearest-neighbour correspondences per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from workflow.matchers.base import LocalMatcher, MatcherUnavailableError, register_matcher
from workflow.matchers.features import Correspondences, LocalFeatures, _empty_correspondences


def nearest_neighbour_matches(
    dist: np.ndarray, ratio: float | None = 0.8, mutual: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour matches from a distance matrix with Lowe's ratio test and/or a mutual check.

    Args:
        dist: ``[N0 x N1]`` descriptor distances (Euclidean or Hamming).
        ratio: keep a match when ``d1 < ratio * d2`` (None disables).
        mutual: keep a match only when each point is the other's nearest neighbour.

    Returns:
        ``idx0: [M]``, ``idx1: [M]`` int64 and ``confidence: [M]`` float32 = ``1 - d1 / d2`` (1 when
        image 1 has a single point).
    """
    n0, n1 = dist.shape
    if n0 == 0 or n1 == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    nn = np.argmin(dist, axis=1)
    rows = np.arange(n0)
    d1 = dist[rows, nn].astype(np.float64)
    if n1 >= 2:
        d2 = np.partition(dist, 1, axis=1)[:, 1].astype(np.float64)
        conf = np.where(d2 > 0, 1.0 - d1 / np.maximum(d2, 1e-12), 0.0)
    else:
        d2 = np.full(n0, np.inf)
        conf = np.ones(n0)
    keep = np.ones(n0, dtype=bool)
    if ratio is not None:
        keep &= d1 < ratio * d2
    if mutual:
        keep &= np.argmin(dist, axis=0)[nn] == rows
    return rows[keep], nn[keep].astype(np.int64), np.clip(conf[keep], 0.0, 1.0).astype(np.float32)


def _opencv_keypoints(kps: Sequence[cv2.KeyPoint], desc: np.ndarray | None, limit: int, dim: int, dtype: Any):
    """Sort OpenCV keypoints by response, keep ``limit`` and return numpy arrays."""
    if desc is None or len(kps) == 0:
        z = np.zeros(0, np.float32)
        return np.zeros((0, 2), np.float32), np.zeros((0, dim), dtype), z, z, z
    response = np.array([k.response for k in kps], dtype=np.float32)
    order = np.argsort(-response, kind="stable")[:limit]
    pts = np.array([kps[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    sizes = np.array([kps[i].size for i in order], dtype=np.float32)
    angles = np.deg2rad(np.array([kps[i].angle for i in order], dtype=np.float32))
    return pts, np.asarray(desc)[order], response[order], sizes, angles


def rootsift(desc: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """RootSIFT (Arandjelovic and Zisserman 2012): L1-normalise, square-root; rows become unit L2 norm."""
    desc = desc.astype(np.float32, copy=False)
    desc = desc / (np.abs(desc).sum(axis=1, keepdims=True) + eps)
    return np.sqrt(np.clip(desc, 0.0, None))


def _opencv_sift(gray: np.ndarray, max_keypoints: int, contrast_threshold: float, edge_threshold: float):
    sift = cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast_threshold, edgeThreshold=edge_threshold)
    kps, desc = sift.detectAndCompute(gray, None)
    pts, desc, resp, sizes, angles = _opencv_keypoints(kps, desc, max_keypoints, 128, np.float32)
    return pts, rootsift(desc), resp, sizes, angles


class _NearestNeighbourMatcher(LocalMatcher):
    """OpenCV detector + descriptor, brute-force nearest neighbours with ratio test and mutual check."""

    binary: ClassVar[bool] = False
    batch_invariant: ClassVar[bool] = True  # pairs are matched one by one on the CPU
    default_conf: ClassVar[dict[str, Any]] = {
        **LocalMatcher.default_conf,
        "confidence_threshold": 0.0,  # confidence is 1 - d1/d2; 0 counts every match passing ratio/mutual
        "max_keypoints": 1024,  # keypoints kept per image, strongest detector response first
        "ratio": 0.8,  # Lowe's ratio test d1 < ratio * d2 (None disables)
        "mutual": True,  # keep only mutual nearest neighbours
        "batch_size": 64,  # pairs per batch (pairs are matched one by one; this only sets the chunking)
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        if self.conf["ratio"] is None and not self.conf["mutual"]:
            raise ValueError("set ratio and/or mutual: without either every point would match")

    def _distances(self, d0: np.ndarray, d1: np.ndarray) -> np.ndarray:
        if self.binary:  # Hamming distance on packed bits
            b0 = np.unpackbits(d0, axis=1).astype(np.float32)
            b1 = np.unpackbits(d1, axis=1).astype(np.float32)
            return b0.sum(1)[:, None] + b1.sum(1)[None, :] - 2.0 * (b0 @ b1.T)
        return np.sqrt(np.clip(2.0 - 2.0 * (d0 @ d1.T), 0.0, None))  # unit-norm descriptors

    def _correspondences(self, feats0: list[LocalFeatures], feats1: list[LocalFeatures]) -> list[Correspondences]:
        out: list[Correspondences] = []
        for f0, f1 in zip(feats0, feats1):
            if f0.num_keypoints == 0 or f1.num_keypoints == 0:
                out.append(_empty_correspondences())
                continue
            dist = self._distances(f0.descriptors, f1.descriptors)
            i0, i1, conf = nearest_neighbour_matches(dist, self.conf["ratio"], self.conf["mutual"])
            out.append((f0.keypoints[i0], f1.keypoints[i1], conf))
        return out


@register_matcher("rootsift")
class RootSIFTMatcher(_NearestNeighbourMatcher):
    """OpenCV SIFT on the grayscale image, RootSIFT descriptors, mutual nearest neighbours + ratio test."""

    default_conf: ClassVar[dict[str, Any]] = {
        **_NearestNeighbourMatcher.default_conf,
        "contrast_threshold": 0.0066667,  # SIFT contrast threshold (COLMAP's, lower than OpenCV's 0.04)
        "edge_threshold": 10.0,  # SIFT edge threshold
    }

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        gray = self.preprocess(image, grayscale=True)
        pts, desc, resp, _, _ = _opencv_sift(
            gray, self.conf["max_keypoints"], self.conf["contrast_threshold"], self.conf["edge_threshold"]
        )
        return LocalFeatures(pts, desc, resp, image_size=gray.shape[:2])


@register_matcher("orb")
class ORBMatcher(_NearestNeighbourMatcher):
    """OpenCV ORB (oriented FAST + rotated BRIEF, 256-bit), Hamming mutual nearest neighbours + ratio test."""

    binary = True
    default_conf: ClassVar[dict[str, Any]] = {
        **_NearestNeighbourMatcher.default_conf,
        "fast_threshold": 10,  # FAST corner threshold (OpenCV default 20; lower finds more on soft textures)
    }

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        gray = self.preprocess(image, grayscale=True)
        orb = cv2.ORB_create(nfeatures=self.conf["max_keypoints"], fastThreshold=self.conf["fast_threshold"])
        kps, desc = orb.detectAndCompute(gray, None)
        pts, desc, resp, _, _ = _opencv_keypoints(kps, desc, self.conf["max_keypoints"], 32, np.uint8)
        return LocalFeatures(pts, desc, resp, image_size=gray.shape[:2])


def _akaze_factory() -> Callable[..., Any] | None:
    factory = getattr(cv2, "AKAZE_create", None)
    if factory is None and hasattr(cv2, "xfeatures2d"):
        factory = getattr(cv2.xfeatures2d, "AKAZE_create", None)
    return factory


@register_matcher("akaze")
class AKAZEMatcher(_NearestNeighbourMatcher):
    """OpenCV AKAZE (binary MLDB descriptors), Hamming mutual nearest neighbours + ratio test.

    OpenCV 5 moved AKAZE out of its main modules: with such a build this matcher raises
    :class:`MatcherUnavailableError` on construction (use ``orb`` or ``rootsift``, or OpenCV 4.x).
    """

    binary = True
    default_conf: ClassVar[dict[str, Any]] = {
        **_NearestNeighbourMatcher.default_conf,
        "detector_threshold": 0.0005,  # AKAZE detector response threshold (OpenCV default 0.001)
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        self._factory = _akaze_factory()
        if self._factory is None:
            raise MatcherUnavailableError(
                f"OpenCV {cv2.__version__} has no AKAZE (OpenCV 5 moved it out of the main modules); "
                "use the 'orb' or 'rootsift' matcher, or install an OpenCV build with AKAZE (4.x)"
            )

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        gray = self.preprocess(image, grayscale=True)
        akaze = self._factory(threshold=self.conf["detector_threshold"])
        kps = akaze.detect(gray, None)
        kps = sorted(kps, key=lambda k: -k.response)[: self.conf["max_keypoints"]]
        kps, desc = akaze.compute(gray, kps)
        pts, desc, resp, _, _ = _opencv_keypoints(kps, desc, self.conf["max_keypoints"], 61, np.uint8)
        return LocalFeatures(pts, desc, resp, image_size=gray.shape[:2])
