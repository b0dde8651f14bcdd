"""Carry a trained source's scores onto the scale its threshold was tuned on.

A gallery-trained similarity (the dual-backbone head) is judged on simulated open-set splits by heads trained on
each split's pseudo-gallery only (:func:`workflow.dual_backbone.heldout.pseudo_runs`), so that no pseudo-query
was seen in training. The model that answers the real queries is trained on the whole gallery: more images per
individual and more individuals, hence tighter clusters and higher cosines for every query, known or new. A
threshold tuned on the split heads' scores is then too low for the final model's scores (on DogFaceNet the
median top score of the queries rose by about 0.06, and most new individuals were called known).

:func:`quantile_map` removes that shift without any label: the same real queries are scored against the same
gallery by the final model and by every split head; each final score is replaced by the split heads' score at
the same quantile. Ranks are unchanged (the stage's top identity and the order of its scores are the final
model's); only the scale becomes the one the thresholds and the cascade search were tuned on.
"""

from __future__ import annotations

import numpy as np


def quantile_map(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``scores [Q]`` mapped monotonically onto the distribution of ``reference [R]`` (quantile matching).

    The ``i``-th smallest of ``Q`` scores becomes the ``(i + 0.5) / Q`` quantile of ``reference``; tied scores
    get the same value. Non-finite scores are returned as they are; an empty or non-finite ``reference`` returns
    ``scores`` unchanged.
    """
    scores = np.asarray(scores, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    reference = np.sort(reference[np.isfinite(reference)])
    out = scores.copy()
    finite = np.isfinite(scores)
    if not len(reference) or not finite.any():
        return out
    values = scores[finite]
    # Mid-rank of each value among the finite scores: ties share a quantile.
    sorted_values = np.sort(values)
    lo = np.searchsorted(sorted_values, values, side="left")
    hi = np.searchsorted(sorted_values, values, side="right")
    q = (lo + hi) / (2.0 * len(values))
    out[finite] = np.quantile(reference, q)
    return out
