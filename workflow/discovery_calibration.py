"""Calibrators and thresholds of the discovery stage where a dataset's own gallery cannot give them.

Discovery fuses calibrated pair scores (P(same individual)) of the global cosine and of ``discovery.matchers``.
Where they come from, per dataset (written to ``results/stages/discovery/<dataset>/calibrators.json``):

``gallery``  the dataset's own WildFusion calibrators, fitted on its labelled gallery pairs (the default).
``refit``    the cosine only, when the shortlist's embedding is not discovery's (``shortlist.backbone: trained``:
             the query x query shortlist and the dense cosine use the baseline's untrained embedding, which the
             WildFusion cosine calibrator was not fitted on): refitted on the same labelled gallery pairs with
             the cosine of discovery's own embedding (:func:`refit_cosine`).
``pooled``   a dataset without a gallery: for each source, the mean of the calibrators that the other datasets'
             discovery used (:func:`pool_calibrators`; exact: the mean of piecewise-linear maps is piecewise-linear
             on the union of their knots).
``rank``     a dataset without a gallery and no other dataset to borrow from: each source's raw scores
             rank-normalised on this dataset's own query pairs (:func:`rank_calibrator`, the empirical CDF; a
             pair in the top 2% of the cosine gets 0.98). Not a probability: set ``discovery.threshold`` for it.

The clustering threshold of a dataset without a gallery (``auto`` cannot be tuned without identities):
the mean of the other datasets' discovery thresholds, else ``discovery.fallback_threshold``
(:func:`borrowed_threshold`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.calibration import IsotonicCalibrator
from workflow.stage_io import write_json

logger = logging.getLogger(__name__)

GALLERY, REFIT, POOLED, RANK = "gallery", "refit", "pooled", "rank"


def pool_calibrators(calibrators: Sequence[IsotonicCalibrator]) -> IsotonicCalibrator:
    """One calibrator whose map is the mean of ``calibrators``' maps (knots: the union of theirs)."""
    if not calibrators:
        raise ValueError("pool_calibrators: no calibrator to pool")
    x = np.unique(np.concatenate([c.x for c in calibrators]))
    y = np.mean([c.predict(x) for c in calibrators], axis=0)
    return IsotonicCalibrator(x, y, sum(c.n_pos for c in calibrators), sum(c.n_neg for c in calibrators))


def rank_calibrator(raw: np.ndarray) -> IsotonicCalibrator:
    """The empirical CDF of ``raw: [P]`` (finite values) as a calibrator: a score maps to its rank share in [0, 1].

    Without any finite value, every score maps to 0 (no evidence links any pair).
    """
    raw = np.asarray(raw, np.float64)
    raw = np.sort(raw[np.isfinite(raw)])
    if len(raw) == 0:
        return IsotonicCalibrator(np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    x = np.unique(raw)
    y = np.searchsorted(raw, x, side="right") / len(raw)
    if len(x) == 1:  # one value: a flat map through it
        x, y = np.array([x[0], x[0] + 1.0]), np.array([y[0], y[0]])
    return IsotonicCalibrator(x, y)


def refit_cosine(
    query: Sequence[str], candidate: Sequence[str], identity: dict, embeddings: dict[str, np.ndarray]
) -> IsotonicCalibrator:
    """Isotonic calibrator of the cosine of ``embeddings`` (image id -> L2-normalised ``[D]``) on labelled pairs.

    ``query, candidate``: the gallery pairs (``[P]`` each) WildFusion calibrates on; labels: same identity.
    """
    a = np.stack([embeddings[str(q)] for q in query]).astype(np.float64)
    b = np.stack([embeddings[str(c)] for c in candidate]).astype(np.float64)
    labels = np.array([identity[q] == identity[c] for q, c in zip(query, candidate)], np.float64)
    return IsotonicCalibrator().fit(np.einsum("pd,pd->p", a, b), labels)


def save_calibrators(calibrators: dict[str, IsotonicCalibrator], origin: dict[str, str], path: str | Path) -> None:
    """``calibrators.json``: per source its map and where it came from (:data:`GALLERY` ... :data:`RANK`)."""
    write_json({s: {"origin": origin[s], **c.to_dict()} for s, c in calibrators.items()}, path)


def load_calibrators(path: str | Path) -> dict[str, IsotonicCalibrator]:
    return {s: IsotonicCalibrator.from_dict(d) for s, d in json.loads(Path(path).read_text()).items()}


def fallback_calibrators(
    sources: Sequence[str], others: Sequence[str | Path], raw: pd.DataFrame, dense_cosine: np.ndarray | None = None
) -> tuple[dict[str, IsotonicCalibrator], dict[str, str]]:
    """Calibrators of a dataset without a gallery: pooled from ``others`` (``calibrators.json`` files), else rank.

    ``raw``: this dataset's raw scores on its query pairs (one column per source); ``dense_cosine``: optional
    ``[Q x Q]`` cosine of every query pair, whose off-diagonal values rank-normalise the cosine instead.
    """
    loaded = [load_calibrators(p) for p in others]
    calibrators, origin = {}, {}
    for source in sources:
        have = [c[source] for c in loaded if source in c]
        if have:
            calibrators[source], origin[source] = pool_calibrators(have), POOLED
            continue
        values = raw[source].to_numpy(np.float64) if source in raw.columns else np.zeros(0)
        if source == "cosine" and dense_cosine is not None and len(dense_cosine) > 1:
            values = dense_cosine[~np.eye(len(dense_cosine), dtype=bool)]
        calibrators[source], origin[source] = rank_calibrator(values), RANK
    logger.info("no gallery: calibrators of %s: %s (from %d other dataset(s))", list(sources), origin, len(loaded))
    return calibrators, origin


def borrowed_threshold(setting, others: Sequence[str | Path], fallback: float) -> tuple[float, dict]:
    """Threshold of a dataset without a gallery: a number from config, else the mean of the other datasets'
    discovery thresholds (``threshold.json`` files), else ``fallback``; returns it and its record."""
    if setting != "auto":
        return float(setting), {"threshold": float(setting), "source": "config"}
    values = [float(json.loads(Path(p).read_text())["threshold"]) for p in others]
    if values:
        value = float(np.mean(values))
        return value, {"threshold": value, "source": "other datasets (mean)", "values": values,
                       "files": [str(p) for p in others]}  # fmt: skip
    return float(fallback), {"threshold": float(fallback), "source": "discovery.fallback_threshold"}
