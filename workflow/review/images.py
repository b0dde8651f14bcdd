"""Thumbnails (small base64 JPEG data URIs) and the match lines of a pair, for the review page.

Inputs
    image files (any format :func:`workflow.images.load_rgb` reads); the feature manifest of one matcher
    (``results/features/<dataset>/<matcher>/<key>.tsv``: ``image_id, file``), whose per-image features were
    cached by rule ``extract_features``.
Outputs
    ``data:image/jpeg;base64,...`` strings, and per ``(query, candidate)`` pair ``{"matcher", "candidate", "total",
    "lines"}`` where
    ``lines: [L x 5]`` rows ``x0, y0, x1, y1, confidence`` hold coordinates as fractions of each image's width and
    height, so that they land on a thumbnail of any size (the matcher's frame is a resize of the whole image).
"""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
import pandas as pd

from workflow.images import load_rgb
from workflow.match import FeatureStore

logger = logging.getLogger(__name__)


def thumbnail(path: str, size: int = 160, quality: int = 80) -> str:
    """A JPEG data URI of the image at ``path``, its longer side ``size`` px (never enlarged)."""
    from PIL import Image

    image = Image.fromarray(load_rgb(path))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def normalised_lines(
    k0: np.ndarray, k1: np.ndarray, confidence: np.ndarray, size0: tuple[int, int], size1: tuple[int, int], n: int
) -> list[list[float]]:
    """The ``n`` most confident matches as ``[x0, y0, x1, y1, confidence]`` fractions of each frame ``(H, W)``."""
    confidence = np.asarray(confidence, float).reshape(-1)
    order = np.argsort(-confidence, kind="stable")[: max(n, 0)]
    (h0, w0), (h1, w1) = size0, size1
    rows = np.column_stack(
        [k0[order, 0] / w0, k0[order, 1] / h0, k1[order, 0] / w1, k1[order, 1] / h1, confidence[order]]
    )
    return [[round(float(v), 4) for v in row] for row in rows]


def match_lines(
    manifest: pd.DataFrame, name: str, conf: dict, pairs: list[tuple[str, str]], n: int = 40
) -> dict[tuple[str, str], dict]:
    """``{(query, candidate): {"matcher", "candidate", "total", "lines"}}`` for each pair of ``pairs``.

    Features come from the per-image cache of ``manifest``; pairs with an image absent from it are skipped.
    """
    # OpenCV and the matchers: only when the page draws match lines
    from workflow.matchers import create_matcher

    store = FeatureStore(manifest, capacity=256)
    matcher = create_matcher(name, **conf)
    out = {}
    for query, candidate in pairs:
        if query not in store or candidate not in store:
            logger.warning("no cached %s features for pair %r, %r: no match lines", name, query, candidate)
            continue
        f0, f1 = store[query], store[candidate]
        k0, k1, c = matcher.match_details(f0, f1)
        out[query, candidate] = {
            "matcher": name,
            "candidate": candidate,
            "total": int(np.count_nonzero(np.asarray(c) > matcher.conf["confidence_threshold"])),
            "lines": normalised_lines(k0, k1, c, f0.image_size, f1.image_size, n),
        }
    return out
