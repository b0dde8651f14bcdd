"""The matcher interface, its registry and batched pair scoring over cached features.

Inputs: uint8 RGB images ``[H x W x 3]`` and ``(query_id, candidate_id)`` pairs.
Outputs: :class:`~workflow.matchers.features.LocalFeatures` per image and ``scores: [P]`` float32 per pair.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import cv2
import numpy as np

from workflow.matchers.features import Correspondences, LocalFeatures

SCORE_MODES = ("count", "ransac_inliers")
RANSAC_MODELS = ("fundamental", "homography")


class MatcherUnavailableError(RuntimeError):
    """The installed libraries cannot build this matcher (e.g. an OpenCV build without AKAZE)."""


class LocalMatcher:
    """Extract local features per image and score aligned image pairs.

    Subclasses set ``default_conf`` and implement ``_extract_one`` or ``_extract_batch`` and
    ``_correspondences``. Construct through :func:`create_matcher`.
    """

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = False
    # True when a pair's score does not depend on the other pairs of its batch (the pair cache is then exact)
    batch_invariant: ClassVar[bool] = False
    default_conf: ClassVar[dict[str, Any]] = {
        "resize": 512,  # resize every image to resize x resize px before extraction (paper: 512); None keeps it
        "max_side": None,  # instead of resize: shrink (never enlarge) to this longer side, keeping the aspect ratio
        "confidence_threshold": 0.5,  # a match counts when its confidence is above this (WildFusion: 0.5)
        "score": "count",  # raw pair score: "count" (matches above the threshold) or "ransac_inliers"
        "ransac_model": "fundamental",  # "fundamental" or "homography", for score="ransac_inliers"
        "ransac_threshold": 3.0,  # RANSAC inlier threshold in pixels of the resized frame
        "batch_size": 16,  # pairs matched per batch
        "extract_batch_size": 4,  # images per extraction batch
    }

    def __init__(self, **conf: Any) -> None:
        unknown = sorted(set(conf) - set(self.default_conf))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for matcher {self.name!r}; known: {sorted(self.default_conf)}"
            )
        self.conf: dict[str, Any] = {**self.default_conf, **conf}
        if self.conf["score"] not in SCORE_MODES:
            raise ValueError(f"score must be one of {SCORE_MODES}, got {self.conf['score']!r}")
        if self.conf["ransac_model"] not in RANSAC_MODELS:
            raise ValueError(f"ransac_model must be one of {RANSAC_MODELS}, got {self.conf['ransac_model']!r}")
        for key in ("resize", "max_side"):
            if self.conf[key] is not None and (not isinstance(self.conf[key], int) or self.conf[key] < 16):
                raise ValueError(f"{key} must be an int >= 16 or None, got {self.conf[key]!r}")
        for key in ("batch_size", "extract_batch_size"):
            if not isinstance(self.conf[key], int) or self.conf[key] < 1:
                raise ValueError(f"{key} must be a positive int, got {self.conf[key]!r}")

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.conf.items() if v != self.default_conf.get(k)}
        return f"{type(self).__name__}(name={self.name!r}, {changed})"

    # -- extraction ------------------------------------------------------------------------------

    def preprocess(self, image: np.ndarray, grayscale: bool) -> np.ndarray:
        """Resize a uint8 RGB ``[H x W x 3]`` image to the matcher's frame: ``[S x S x 3]`` or ``[S x S]``.

        With ``max_side`` set (it takes precedence over ``resize``) the frame keeps the aspect ratio and the
        longer side becomes ``min(max_side, longer side)``: small images are never enlarged.
        """
        resize, max_side = self.conf["resize"], self.conf["max_side"]
        if max_side is not None:
            scale = max_side / max(image.shape[:2])
            if scale < 1:
                size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        elif resize is not None and image.shape[:2] != (resize, resize):
            shrink = resize < max(image.shape[:2])
            image = cv2.resize(image, (resize, resize), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if grayscale:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return np.ascontiguousarray(image)

    def extract(self, images: Sequence[np.ndarray]) -> list[LocalFeatures]:
        """Extract local features of each image.

        Args:
            images: uint8 RGB arrays ``[H x W x 3]`` (any sizes).

        Returns:
            One :class:`LocalFeatures` per image, keypoints in the resized frame.
        """
        for i, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise ValueError(
                    f"image {i}: expected a uint8 RGB array [H x W x 3] (workflow.images.load_rgb), got {got}"
                )
        out: list[LocalFeatures] = []
        step = self.conf["extract_batch_size"]
        for start in range(0, len(images), step):
            chunk = list(images[start : start + step])
            feats = self._extract_batch(chunk)
            for image, f in zip(chunk, feats):
                f.original_size = (int(image.shape[0]), int(image.shape[1]))
                f.extractor = self.name
            out.extend(feats)
        return out

    def _extract_batch(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        return [self._extract_one(image) for image in images]

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        raise NotImplementedError

    # -- matching --------------------------------------------------------------------------------

    def match_pairs(
        self, feats0: Sequence[LocalFeatures], feats1: Sequence[LocalFeatures], batch_size: int | None = None
    ) -> np.ndarray:
        """Raw scores of ``B`` aligned pairs ``(feats0[b], feats1[b])``.

        Args:
            feats0, feats1: features of the first and second image of each pair (same length ``B``).
            batch_size: pairs per network batch (default: the ``batch_size`` option).

        Returns:
            ``scores: [B]`` float32, >= 0: matches above ``confidence_threshold``, or their RANSAC inliers.
        """
        if len(feats0) != len(feats1):
            raise ValueError(f"feats0 and feats1 must be aligned, got {len(feats0)} and {len(feats1)} entries")
        for f in (*feats0, *feats1):
            if f.extractor and f.extractor != self.name:
                raise ValueError(f"features extracted by {f.extractor!r} cannot be matched by {self.name!r}")
        step = batch_size or self.conf["batch_size"]
        scores = np.zeros(len(feats0), dtype=np.float32)
        for start in range(0, len(feats0), step):
            corr = self._correspondences(list(feats0[start : start + step]), list(feats1[start : start + step]))
            for k, (kp0, kp1, conf) in enumerate(corr):
                scores[start + k] = self._score(kp0, kp1, conf)
        return scores

    def match_details(self, f0: LocalFeatures, f1: LocalFeatures) -> Correspondences:
        """All matches of one pair, for visualisation.

        Returns:
            ``kpts0: [M x 2]``, ``kpts1: [M x 2]`` (resized frames of ``f0`` and ``f1``) and
            ``confidence: [M]``; the score counts those above ``confidence_threshold``.
        """
        return self._correspondences([f0], [f1])[0]

    def _correspondences(self, feats0: list[LocalFeatures], feats1: list[LocalFeatures]) -> list[Correspondences]:
        raise NotImplementedError

    def _score(self, kp0: np.ndarray, kp1: np.ndarray, conf: np.ndarray) -> float:
        keep = conf > self.conf["confidence_threshold"]
        if self.conf["score"] == "count":
            return float(np.count_nonzero(keep))
        return float(ransac_inliers(kp0[keep], kp1[keep], self.conf["ransac_model"], self.conf["ransac_threshold"]))


def ransac_inliers(kp0: np.ndarray, kp1: np.ndarray, model: str = "fundamental", threshold: float = 3.0) -> int:
    """Number of correspondences consistent with one fundamental matrix or homography (MAGSAC++).

    Args:
        kp0, kp1: ``[M x 2]`` matched pixel coordinates.

    Returns:
        Inlier count; 0 when there are too few matches (< 8 fundamental, < 4 homography) or no model.
    """
    minimum = 8 if model == "fundamental" else 4
    if len(kp0) < minimum:
        return 0
    p0 = np.ascontiguousarray(kp0, dtype=np.float64)
    p1 = np.ascontiguousarray(kp1, dtype=np.float64)
    try:
        if model == "fundamental":
            _, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, threshold, 0.999, 10000)
        else:
            _, mask = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, threshold, maxIters=10000, confidence=0.999)
    except cv2.error:
        return 0
    return 0 if mask is None else int(np.count_nonzero(mask))


M = TypeVar("M", bound=type[LocalMatcher])
MATCHERS: dict[str, type[LocalMatcher]] = {}


def register_matcher(name: str) -> Callable[[M], M]:
    """Class decorator adding a matcher to :data:`MATCHERS` under ``name``; refuses duplicates."""

    def decorator(cls: M) -> M:
        if name in MATCHERS:
            raise ValueError(f"matcher {name!r} is already registered by {MATCHERS[name].__qualname__}")
        cls.name = name
        MATCHERS[name] = cls
        return cls

    return decorator


def available_matchers() -> list[str]:
    return sorted(MATCHERS)


def create_matcher(name: str, **conf: Any) -> LocalMatcher:
    """Build the matcher registered as ``name`` with ``conf`` overriding its ``default_conf``."""
    if name not in MATCHERS:
        raise ValueError(f"unknown matcher {name!r}; known matchers: {', '.join(available_matchers())}")
    return MATCHERS[name](**conf)


def score_pairs(
    matcher: LocalMatcher,
    features: Mapping[str, LocalFeatures],
    pairs: Sequence[tuple[str, str]],
    batch_size: int | None = None,
) -> np.ndarray:
    """Raw scores of ``P`` pairs ``(id0, id1)`` from cached features, streamed batch by batch.

    Only one batch of pairs is in flight at a time: memory is O(batch_size), never query x gallery.
    Keep consecutive pairs of one query together (as a shortlist does): LoFTR then runs the backbone
    of a repeated image once per batch.

    Args:
        matcher: the matcher that extracted ``features``.
        features: ``{image_id: LocalFeatures}`` covering every id in ``pairs``.
        pairs: ``[P]`` pairs of image ids.
        batch_size: pairs per batch (default: the matcher's ``batch_size`` option).

    Returns:
        ``scores: [P]`` float32 aligned with ``pairs``.
    """
    missing = sorted({i for pair in pairs for i in pair if i not in features})
    if missing:
        raise KeyError(f"no features for {len(missing)} image(s) of the pairs, e.g. {missing[:5]}; extract them first")
    step = batch_size or matcher.conf["batch_size"]
    scores = np.zeros(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), step):
        chunk = pairs[start : start + step]
        scores[start : start + len(chunk)] = matcher.match_pairs(
            [features[a] for a, _ in chunk], [features[b] for _, b in chunk], batch_size=step
        )
    return scores
