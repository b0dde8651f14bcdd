"""Local feature matchers of the WildFusion stage: extraction, feature cache and batched pair scoring.

The paper (section 3.3, Step 2) scores every (query, candidate) pair of the global shortlist with five
local pipelines: SuperPoint, ALIKED, DISK and SIFT, each with LightGlue at 512 x 512 px, and LoFTR at
192 x 192 px grayscale. Each pipeline returns a raw pair score (by default the number of matches with
confidence > 0.5) that the calibration stage maps to a probability.

Inputs:
    uint8 RGB images ``[H x W x 3]`` (:func:`workflow.images.load_rgb`), and a list of
    ``(query_id, candidate_id)`` pairs from the shortlist.
Outputs:
    per image and extractor, :class:`LocalFeatures` (stored once in one ``.npz`` per shard with
    :func:`save_features` and reused by every pair), and per pair a raw score: ``scores: [P]`` float32
    (:func:`score_pairs`, which streams over the pairs in batches and never holds more than one batch).

Registry (``create_matcher(name, **conf)``): ``superpoint-lightglue``, ``aliked-lightglue``,
``disk-lightglue``, ``sift-lightglue``, ``loftr`` (learned, on kornia + torch), and ``rootsift``,
``orb``, ``akaze`` (OpenCV only, no learned weights; these never import torch).

Learned weights are never downloaded here. ``weights`` (and ``extractor_weights`` for the detector of a
LightGlue pipeline) name a file; ``None`` looks in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
under the file name kornia itself would cache, and otherwise raises :class:`WeightsNotFoundError` naming
the file and where to place it, unless ``allow_random_weights=True`` (tests and timing only).

Conventions: keypoints are ``(x, y)`` pixels in the matcher's resized frame, pixel centres at integers.
Shapes are written ``[N x 2]``; ``B`` is a batch of pairs, ``N``/``M`` keypoint counts, ``D`` descriptor size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import cv2
import numpy as np

from workflow._entry import atomic_path

if TYPE_CHECKING:  # torch is imported lazily: the OpenCV matchers never load it
    import torch

logger = logging.getLogger(__name__)

FEATURES_FORMAT_VERSION = 1
SCORE_MODES = ("count", "ransac_inliers")
RANSAC_MODELS = ("fundamental", "homography")

Correspondences = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(kpts0: [M x 2] float32, kpts1: [M x 2] float32, confidence: [M] float32)`` for one pair."""


class WeightsNotFoundError(FileNotFoundError):
    """A learned matcher's weights file is missing and random weights were not allowed."""


class MatcherUnavailableError(RuntimeError):
    """The installed libraries cannot build this matcher (e.g. an OpenCV build without AKAZE)."""


# ----------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSource:
    """Where a learned network's weights come from and how the file is laid out."""

    file_names: tuple[str, ...]  # names looked for in $TORCH_HOME/hub/checkpoints; the first is canonical
    url: str  # where to download the file by hand
    licence: str  # licence of the weights (not of the code)
    nested_key: str | None = None  # the state dict sits under this key of the checkpoint


_LG_URL = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/{}_lightglue.pth"
WEIGHTS: dict[str, WeightSource] = {
    "superpoint": WeightSource(
        ("superpoint_v1.pth",),
        "https://github.com/magicleap/SuperPointPretrainedNetwork/raw/master/superpoint_v1.pth",
        "Magic Leap SuperPoint licence: non-commercial research use only",
    ),
    "aliked": WeightSource(
        ("aliked-n16.pth",), "https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth", "BSD-3-Clause"
    ),
    "disk": WeightSource(
        ("depth-save.pth",),
        "https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
        "Apache-2.0",
        nested_key="extractor",
    ),
    "loftr": WeightSource(
        ("loftr_outdoor.ckpt",),
        "https://huggingface.co/kornia/loftr/resolve/main/loftr_outdoor.ckpt",
        "Apache-2.0",
        nested_key="state_dict",
    ),
}
for _feature in ("superpoint", "aliked", "disk", "sift"):
    # kornia 0.9 caches LightGlue weights as f"{name}_v0.1_arxiv.pth" with every "." replaced by "-",
    # i.e. without a file extension; the release asset itself is "<feature>_lightglue.pth".
    WEIGHTS[f"lightglue-{_feature}"] = WeightSource(
        (f"{_feature}_lightglue_v0-1_arxiv-pth", f"{_feature}_lightglue.pth"),
        _LG_URL.format(_feature),
        "Apache-2.0 (cvg/LightGlue)",
    )


def hub_checkpoint_dir() -> Path:
    """The torch hub checkpoint folder that kornia and torchvision download into."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(key: str, path: str | Path | None, allow_random: bool, option: str = "weights") -> Path | None:
    """Find the weights file of network ``key`` (a :data:`WEIGHTS` entry).

    Returns:
        The file to load, or None when it is absent and ``allow_random`` (build random weights).

    Raises:
        WeightsNotFoundError: an explicit ``path`` does not exist, or no file was found and random
            weights are not allowed; the message names the file, where to put it and the config option.
    """
    source = WEIGHTS[key]
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{option}={str(path)!r} does not exist; download {source.file_names[0]} from {source.url} "
                f"({source.licence})"
            )
        return path
    folder = hub_checkpoint_dir()
    for name in source.file_names:
        if (folder / name).is_file():
            return folder / name
    if allow_random:
        logger.warning("no %s weights found in %s: using RANDOM weights (allow_random_weights=true)", key, folder)
        return None
    raise WeightsNotFoundError(
        f"no {key} weights: place {source.file_names[0]} (from {source.url}; {source.licence}) at "
        f"{folder / source.file_names[0]}, or set the matcher option {option} to its path. "
        "Random weights (tests and timing only) need allow_random_weights: true."
    )


def _load_state(path: Path, nested_key: str | None) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if nested_key is not None and isinstance(state, dict) and nested_key in state:
        state = state[nested_key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _load_checked(
    module: torch.nn.Module,
    state: Mapping[str, Any],
    path: Path,
    optional: Sequence[str] = (),
    allow_unexpected: bool = False,
) -> None:
    """Load ``state`` strictly, except for the buffers named in ``optional`` (derived, not learned).

    ``allow_unexpected`` tolerates (and logs) extra keys, as kornia does for the ALIKED and LightGlue files.
    """
    result = module.load_state_dict(dict(state), strict=False)
    missing = [k for k in result.missing_keys if k not in optional]
    unexpected = [] if allow_unexpected else result.unexpected_keys
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: missing {missing[:5]} unexpected "
            f"{unexpected[:5]} (of {len(missing)} / {len(unexpected)})"
        )
    if result.unexpected_keys:
        logger.warning(
            "%s: ignored %d unexpected keys, e.g. %s", path, len(result.unexpected_keys), result.unexpected_keys[:3]
        )
    logger.info("loaded %s weights from %s", type(module).__name__, path)


# ----------------------------------------------------------------------------------------------------
# Base class and registry
# ----------------------------------------------------------------------------------------------------


class LocalMatcher:
    """Extract local features per image and score aligned image pairs.

    Subclasses set ``default_conf`` and implement ``_extract_one`` or ``_extract_batch`` and
    ``_correspondences``. Construct through :func:`create_matcher`.
    """

    name: ClassVar[str] = ""
    learned: ClassVar[bool] = False
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


# ----------------------------------------------------------------------------------------------------
# Classical OpenCV matchers (no torch)
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Learned matchers (kornia + torch, imported on construction)
# ----------------------------------------------------------------------------------------------------


class _TorchMatcher(LocalMatcher):
    learned = True
    default_conf: ClassVar[dict[str, Any]] = {
        **LocalMatcher.default_conf,
        "weights": None,  # matcher weights file; None -> $TORCH_HOME/hub/checkpoints/<file> (see WEIGHTS)
        "allow_random_weights": False,  # random weights when no file is found: tests and timing ONLY
        "device": "cpu",  # torch device: "cpu", "cuda", "cuda:1", ...
        "mixed_precision": False,  # autocast the matching network: float16 on CUDA, bfloat16 on CPU
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        import torch

        self.device = torch.device(self.conf["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.conf['device']!r} but torch sees no CUDA device; use device: cpu")
        self.random_weights: list[str] = []  # networks built with random weights

    def _weights(self, key: str, option: str) -> Path | None:
        path = resolve_weights(key, self.conf[option], self.conf["allow_random_weights"], option)
        if path is None:
            self.random_weights.append(key)
        return path

    def _autocast(self):
        """Autocast for the matching network only; extraction always runs in float32."""
        import torch

        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=bool(self.conf["mixed_precision"]))

    def _image_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 ``[B x H x W x 3]`` or ``[B x H x W]`` -> float ``[B x C x H x W]`` in [0, 1] on the device."""
        import torch

        arr = np.stack(images)
        t = torch.from_numpy(arr).to(self.device)
        t = t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
        return t.float().div_(255.0)


def _random_init(build: Callable[[], Any]) -> Any:
    """Build a module with a fixed seed, leaving the global torch RNG as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def load_lightglue(features: str, path: Path | None, filter_threshold: float) -> torch.nn.Module:
    """kornia ``LightGlue`` for ``features`` with weights from ``path`` (random weights when None).

    Built with ``features=None`` (kornia would otherwise download) and the feature type's configuration,
    pruning and early stopping off; the cvg release files' old key names (``self_attn.0``) are renamed.
    """
    from kornia.feature import LightGlue

    conf = {k: v for k, v in LightGlue.features[features].items() if k != "weights"}
    conf.update(depth_confidence=-1, width_confidence=-1, filter_threshold=filter_threshold)
    # flash stays True (kornia's default): LightGlue's attention calls torch.backends.cuda.enable_flash_sdp(flash)
    # on construction, so flash=False would switch flash attention off for the whole process.
    model = _random_init(lambda: LightGlue(features=None, **conf))
    if path is not None:
        state = _load_state(path, None)
        state = {k[len("matcher.") :] if k.startswith("matcher.") else k: v for k, v in state.items()}
        for i in range(model.conf.n_layers):
            for block in ("self_attn", "cross_attn"):
                old, new = f"{block}.{i}.", f"transformers.{i}.{block}."
                state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
        _load_checked(model, state, path, optional=("confidence_thresholds",), allow_unexpected=True)
    return model.eval()


def lightglue_forward(
    model: torch.nn.Module,
    kpts0: torch.Tensor,
    kpts1: torch.Tensor,
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    mask0: torch.Tensor,
    mask1: torch.Tensor,
    size0: torch.Tensor,
    size1: torch.Tensor,
    extra0: torch.Tensor | None = None,
    extra1: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched LightGlue over padded keypoint sets, with masks, all layers, no pruning.

    kornia's ``LightGlue.forward`` takes no padding masks (it pads only on its ``torch.compile`` path,
    whose masks broadcast the batch against the heads), so this runs its modules with masks of shape
    ``[B x 1 x M x 1]`` and masks padded rows and columns out of the assignment. Each pair gives the
    matches it gives alone.

    Args:
        kpts0, kpts1: ``[B x M x 2]``, ``[B x N x 2]`` pixel ``(x, y)``.
        desc0, desc1: ``[B x M x D]``, ``[B x N x D]``.
        mask0, mask1: ``[B x M]``, ``[B x N]`` bool, True for real keypoints.
        size0, size1: ``[B x 2]`` image ``(W, H)``.
        extra0, extra1: ``[B x M x 2]`` (scale, orientation) for ``add_scale_ori`` models (SIFT).

    Returns:
        ``matches0: [B x M]`` int64 index into image 1 or -1, ``scores0: [B x M]`` match confidence.
    """
    import torch
    from kornia.feature.lightglue import filter_matches, normalize_keypoints, sigmoid_log_double_softmax

    k0 = normalize_keypoints(kpts0, size0)
    k1 = normalize_keypoints(kpts1, size1)
    if model.conf.add_scale_ori:
        if extra0 is None or extra1 is None:
            raise ValueError("this LightGlue model needs keypoint scales and orientations")
        k0, k1 = torch.cat([k0, extra0], -1), torch.cat([k1, extra1], -1)
    d0, d1 = model.input_proj(desc0), model.input_proj(desc1)
    e0, e1 = model.posenc(k0), model.posenc(k1)
    padded = not (bool(mask0.all()) and bool(mask1.all()))
    am0 = mask0[:, None, :, None] if padded else None
    am1 = mask1[:, None, :, None] if padded else None
    for layer in model.transformers:
        d0, d1 = layer(d0, d1, e0, e1, mask0=am0, mask1=am1)
    head = model.log_assignment[-1]
    md0, md1 = head.final_proj(d0), head.final_proj(d1)
    dim = md0.shape[-1]
    sim = torch.einsum("bmd,bnd->bmn", md0, md1) / dim**0.5
    valid = mask0[:, :, None] & mask1[:, None, :]
    if padded:
        sim = sim.masked_fill(~valid, float("-inf"))
    scores = sigmoid_log_double_softmax(sim, head.matchability(d0), head.matchability(d1))
    if padded:
        scores[:, :-1, :-1] = scores[:, :-1, :-1].masked_fill(~valid, float("-inf"))
    matches0, _, scores0, _ = filter_matches(scores, model.conf.filter_threshold)
    return matches0, scores0


class _LightGlueMatcher(_TorchMatcher):
    """Keypoint extractor + kornia LightGlue, matched in padded batches."""

    lightglue_features: ClassVar[str] = ""  # kornia LightGlue feature type
    channels: ClassVar[int] = 3  # network input channels (1: grayscale)
    default_conf: ClassVar[dict[str, Any]] = {
        **_TorchMatcher.default_conf,
        "max_keypoints": 256,  # keypoints per image, best first (WildFusion forces 256)
        "filter_threshold": 0.1,  # LightGlue returns mutual matches above this confidence (kornia default)
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        if not isinstance(self.conf["max_keypoints"], int) or self.conf["max_keypoints"] < 1:
            raise ValueError(f"max_keypoints must be a positive int, got {self.conf['max_keypoints']!r}")
        if not 0 <= self.conf["filter_threshold"] < 1:
            raise ValueError(f"filter_threshold must be in [0, 1), got {self.conf['filter_threshold']!r}")
        self.extractor = self._build_extractor()
        if self.extractor is not None:
            self.extractor = self.extractor.to(self.device).eval()
        path = self._weights(f"lightglue-{self.lightglue_features}", "weights")
        self.lightglue = load_lightglue(self.lightglue_features, path, self.conf["filter_threshold"]).to(self.device)

    def _build_extractor(self) -> torch.nn.Module | None:
        raise NotImplementedError

    def _run_extractor(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``[B x C x H x W]`` in [0, 1] -> per image ``(keypoints [N x 2], scores [N], descriptors [N x D])``."""
        raise NotImplementedError

    def _extract_batch(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        import torch

        prepped = [
            self.preprocess(im, grayscale=self.channels == 1 or self.conf.get("grayscale", False)) for im in images
        ]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prepped):
            groups.setdefault(p.shape, []).append(i)
        out: list[LocalFeatures | None] = [None] * len(images)
        for idx in groups.values():
            batch = self._image_tensor([prepped[i] for i in idx])
            if self.channels == 3 and batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            with torch.inference_mode():
                results = self._run_extractor(batch)
            for i, (kp, sc, de) in zip(idx, results):
                out[i] = LocalFeatures(
                    kp.float().cpu().numpy(),
                    de.float().cpu().numpy(),
                    sc.float().cpu().numpy(),
                    image_size=prepped[i].shape[:2],
                )
        return out  # type: ignore[return-value]

    def _correspondences(self, feats0: list[LocalFeatures], feats1: list[LocalFeatures]) -> list[Correspondences]:
        import torch

        b = len(feats0)
        n0 = [f.num_keypoints for f in feats0]
        n1 = [f.num_keypoints for f in feats1]
        len0, len1 = max(n0, default=0), max(n1, default=0)
        if b == 0 or len0 == 0 or len1 == 0:
            return [_empty_correspondences() for _ in range(b)]
        dim = self.lightglue.conf.input_dim
        for f in (*feats0, *feats1):
            if f.num_keypoints and f.descriptors.shape[1] != dim:
                raise ValueError(f"{self.name}: descriptors of size {f.descriptors.shape[1]}, LightGlue expects {dim}")
        sift = bool(self.lightglue.conf.add_scale_ori)

        def pad(feats: list[LocalFeatures], length: int):
            kp = np.zeros((b, length, 2), np.float32)
            de = np.zeros((b, length, dim), np.float32)
            mask = np.zeros((b, length), bool)
            extra = np.zeros((b, length, 2), np.float32) if sift else None
            size = np.zeros((b, 2), np.float32)
            for k, f in enumerate(feats):
                n = f.num_keypoints
                kp[k, :n], de[k, :n], mask[k, :n] = f.keypoints, f.descriptors, True
                size[k] = (f.image_size[1], f.image_size[0])
                if sift:
                    if f.scales is None or f.oris is None:
                        raise ValueError(f"{self.name}: features lack the keypoint scales/orientations")
                    extra[k, :n, 0], extra[k, :n, 1] = f.scales, f.oris
            to = lambda a: None if a is None else torch.from_numpy(a).to(self.device)  # noqa: E731
            return to(kp), to(de), to(mask), to(size), to(extra)

        kp0, de0, m0, s0, x0 = pad(feats0, len0)
        kp1, de1, m1, s1, x1 = pad(feats1, len1)
        with torch.inference_mode(), self._autocast():
            matches0, scores0 = lightglue_forward(self.lightglue, kp0, kp1, de0, de1, m0, m1, s0, s1, x0, x1)
        matches0 = matches0.cpu().numpy()
        scores0 = scores0.float().cpu().numpy()
        out: list[Correspondences] = []
        for k in range(b):
            i0 = np.flatnonzero(matches0[k, : n0[k]] > -1)
            i1 = matches0[k, i0]
            out.append((feats0[k].keypoints[i0], feats1[k].keypoints[i1], scores0[k, i0].astype(np.float32)))
        return out


@register_matcher("superpoint-lightglue")
class SuperPointLightGlue(_LightGlueMatcher):
    """SuperPoint (this project's network, :mod:`workflow.superpoint`) + LightGlue, grayscale input.

    Weights: ``superpoint_v1.pth`` (Magic Leap, non-commercial) and LightGlue's superpoint weights.
    """

    lightglue_features = "superpoint"
    channels = 1
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "extractor_weights": None,  # detector weights file; None -> $TORCH_HOME/hub/checkpoints/<file>
        "detection_threshold": 0.0005,  # SuperPoint keypoint score threshold (LightGlue's setting)
        "nms_radius": 4,  # SuperPoint non-maximum suppression radius in pixels
    }

    def _build_extractor(self) -> torch.nn.Module:
        from workflow.superpoint import SuperPoint, load_superpoint_weights

        model = _random_init(
            lambda: SuperPoint(
                max_keypoints=self.conf["max_keypoints"],
                detection_threshold=self.conf["detection_threshold"],
                nms_radius=self.conf["nms_radius"],
            )
        )
        path = self._weights("superpoint", "extractor_weights")
        return model if path is None else load_superpoint_weights(model, path)

    def _run_extractor(self, images: torch.Tensor):
        out = self.extractor(images)
        return list(zip(out["keypoints"], out["scores"], out["descriptors"]))


@register_matcher("aliked-lightglue")
class ALIKEDLightGlue(_LightGlueMatcher):
    """kornia ALIKED (aliked-n16, RGB) + LightGlue."""

    lightglue_features = "aliked"
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "grayscale": False,  # feed a grayscale copy (replicated to 3 channels) instead of RGB
        "extractor_weights": None,  # detector weights file; None -> $TORCH_HOME/hub/checkpoints/<file>
        "detection_threshold": -1.0,  # <= 0: keep the max_keypoints strongest maxima; > 0: score threshold
        "nms_radius": 2,  # ALIKED non-maximum suppression radius
    }

    def _build_extractor(self) -> torch.nn.Module:
        from kornia.feature import ALIKED

        model = _random_init(
            lambda: ALIKED(
                "aliked-n16",
                max_num_keypoints=self.conf["max_keypoints"],
                detection_threshold=self.conf["detection_threshold"],
                nms_radius=self.conf["nms_radius"],
            )
        )
        path = self._weights("aliked", "extractor_weights")
        if path is not None:
            _load_checked(model, _load_state(path, WEIGHTS["aliked"].nested_key), path, allow_unexpected=True)
        return model

    def _run_extractor(self, images: torch.Tensor):
        return [(f.keypoints, f.keypoint_scores, f.descriptors) for f in self.extractor(images)]


@register_matcher("disk-lightglue")
class DISKLightGlue(_LightGlueMatcher):
    """kornia DISK (depth weights, RGB) + LightGlue."""

    lightglue_features = "disk"
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "grayscale": False,  # feed a grayscale copy (replicated to 3 channels) instead of RGB
        "extractor_weights": None,  # detector weights file; None -> $TORCH_HOME/hub/checkpoints/<file>
        "detection_threshold": 0.0,  # DISK keeps heatmap maxima strictly above this logit
        "nms_window": 5,  # DISK non-maximum suppression window in pixels
    }

    def _build_extractor(self) -> torch.nn.Module:
        from kornia.feature import DISK

        model = _random_init(DISK)
        path = self._weights("disk", "extractor_weights")
        if path is not None:
            _load_checked(model, _load_state(path, WEIGHTS["disk"].nested_key), path)
        return model

    def _run_extractor(self, images: torch.Tensor):
        feats = self.extractor(
            images,
            n=self.conf["max_keypoints"],
            window_size=self.conf["nms_window"],
            score_threshold=self.conf["detection_threshold"],
            pad_if_not_divisible=True,
        )
        out = []
        for f in feats:  # DISK lists keypoints in raster order: put the best first like the others
            order = f.detection_scores.argsort(descending=True)
            out.append((f.keypoints[order], f.detection_scores[order], f.descriptors[order]))
        return out


@register_matcher("sift-lightglue")
class SIFTLightGlue(_LightGlueMatcher):
    """OpenCV SIFT (RootSIFT descriptors, scales and orientations) + LightGlue's ``sift`` weights.

    Keypoint scale and orientation follow cvg/LightGlue's OpenCV SIFT backend (``KeyPoint.size`` and the
    angle in radians). Extraction runs on the CPU with OpenCV; matching on ``device``.
    """

    lightglue_features = "sift"
    channels = 1
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "contrast_threshold": 0.0066667,  # SIFT contrast threshold (COLMAP's, as in cvg/LightGlue)
        "edge_threshold": 10.0,  # SIFT edge threshold
    }

    def _build_extractor(self) -> None:
        return None

    def _extract_batch(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        out = []
        for image in images:
            gray = self.preprocess(image, grayscale=True)
            pts, desc, resp, sizes, angles = _opencv_sift(
                gray, self.conf["max_keypoints"], self.conf["contrast_threshold"], self.conf["edge_threshold"]
            )
            out.append(LocalFeatures(pts, desc, resp, image_size=gray.shape[:2], scales=sizes, oris=angles))
        return out


@register_matcher("loftr")
class LoFTRMatcher(_TorchMatcher):
    """kornia LoFTR (outdoor weights), detector-free, on 192 x 192 grayscale images.

    ``extract`` only preprocesses (the stored feature is the grayscale image); matching runs the backbone
    once per distinct image of a batch, then the coarse-to-fine transformer on every pair.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        **_TorchMatcher.default_conf,
        "resize": 192,  # LoFTR runs on 192 x 192 px grayscale in the paper
        "coarse_threshold": 0.2,  # LoFTR returns coarse matches above this (kornia default)
        "batch_size": 8,  # pairs per LoFTR batch
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        from kornia.feature import LoFTR
        from kornia.feature.loftr.loftr import default_cfg

        cfg = {**default_cfg, "match_coarse": {**default_cfg["match_coarse"], "thr": self.conf["coarse_threshold"]}}
        model = _random_init(lambda: LoFTR(pretrained=None, config=cfg))
        path = self._weights("loftr", "weights")
        if path is not None:
            state = _load_state(path, WEIGHTS["loftr"].nested_key)
            _load_checked(model, {k.removeprefix("matcher."): v for k, v in state.items()}, path)
        self.loftr = model.to(self.device).eval()

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        gray = self.preprocess(image, grayscale=True)
        empty = np.zeros(0, np.float32)
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 0), np.float32), empty, gray.shape, image=gray)

    def _correspondences(self, feats0: list[LocalFeatures], feats1: list[LocalFeatures]) -> list[Correspondences]:
        import torch

        for f in (*feats0, *feats1):
            if f.image is None:
                raise ValueError("LoFTR features must carry the preprocessed image (use LoFTRMatcher.extract)")
        shapes = {f.image.shape for f in (*feats0, *feats1)}
        if len(shapes) > 1:  # differently sized images (resize=None) cannot share a batch
            return [self._correspondences([a], [b])[0] for a, b in zip(feats0, feats1)]
        unique: dict[int, int] = {}
        images: list[np.ndarray] = []
        for f in (*feats0, *feats1):
            if id(f) not in unique:
                unique[id(f)] = len(images)
                images.append(f.image)
        idx0 = torch.tensor([unique[id(f)] for f in feats0], device=self.device)
        idx1 = torch.tensor([unique[id(f)] for f in feats1], device=self.device)
        with torch.inference_mode():
            backbone = self.loftr.extract_features(self._image_tensor(images))
        with torch.inference_mode(), self._autocast():
            out = self.loftr(
                {
                    "features0": {k: v[idx0] for k, v in backbone.items()},
                    "features1": {k: v[idx1] for k, v in backbone.items()},
                }
            )
        # kornia's LoFTR puts pixel centres at +0.5; shift to integer pixel centres like the other matchers
        kp0 = (out["keypoints0"].float() - 0.5).cpu().numpy()
        kp1 = (out["keypoints1"].float() - 0.5).cpu().numpy()
        conf = out["confidence"].float().cpu().numpy()
        batch = out["batch_indexes"].cpu().numpy()
        return [(kp0[batch == k], kp1[batch == k], conf[batch == k]) for k in range(len(feats0))]


# ----------------------------------------------------------------------------------------------------
# Synthetic inputs for tests, demos and benchmarks
# ----------------------------------------------------------------------------------------------------


def textured_image(size: int = 96, seed: int = 0) -> np.ndarray:
    """A random textured RGB image ``[size x size x 3]`` uint8 (ellipses and lines on a gradient)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        img[..., c] = 110 + 60 * (a * xx + b * yy)
    n = max(20, size * size // 300)
    for _ in range(n):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(max(2, size // 40), max(3, size // 8), 2))
        color = tuple(float(v) for v in rng.integers(0, 256, 3))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    for _ in range(n // 3):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(img, p0, p1, tuple(float(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 3)))
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def warp_image(image: np.ndarray, seed: int = 0, strength: float = 0.08) -> np.ndarray:
    """A perspective-warped, slightly re-lit copy of ``image`` (same shape), as a second view."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    dst = src + rng.uniform(-strength, strength, src.shape).astype(np.float32) * np.array([w, h], np.float32)
    warped = cv2.warpPerspective(
        image, cv2.getPerspectiveTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT
    ).astype(np.float32)
    return np.clip(warped * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10), 0, 255).astype(np.uint8)
