"""Isotonic calibration of raw pair scores into P(same individual), and WildFusion's score fusion.

A :class:`IsotonicCalibrator` is fitted on labelled gallery pairs (same / different individual) of one
matcher (or of the global cosine), saved as a plain JSON artifact (its step function), and maps any raw
score monotonically into ``[0, 1]``. :func:`fuse_scores` averages the calibrated scores of the sources
that scored a pair (weights configurable).

Raw scores are rounded to :data:`SIGNIFICANT_DIGITS` digits below the largest one before fitting and predicting
(the calibrator's ``resolution``). Matchers' scores are counts with many ties; without the rounding, a change in
the last bits of the inputs (another machine's CPU kernels) breaks the ties in random order and the isotonic fit
orders the labels of each tied group by that noise, which moves calibrated scores and every later choice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.stage_io import write_json

logger = logging.getLogger(__name__)

# Digits kept below the leading digit of the largest raw score (integers up to 9,999 stay exact).
SIGNIFICANT_DIGITS = 4


def resolution_of(scores: np.ndarray) -> float:
    """The rounding step of raw scores: ``10 ** (floor(log10(max |score|)) - SIGNIFICANT_DIGITS)`` (0 if all 0)."""
    scores = np.asarray(scores, np.float64)
    top = np.max(np.abs(scores[np.isfinite(scores)]), initial=0.0)
    return float(10.0 ** (np.floor(np.log10(top)) - SIGNIFICANT_DIGITS)) if top > 0 else 0.0


def quantize(scores: np.ndarray, resolution: float) -> np.ndarray:
    """``scores`` rounded to multiples of ``resolution`` (unchanged for 0); NaN and inf stay as they are."""
    scores = np.asarray(scores, np.float64)
    if resolution <= 0:
        return scores
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(scores), np.round(scores / resolution) * resolution, scores)


@dataclass
class IsotonicCalibrator:
    """Monotone non-decreasing map from a raw score to a probability in ``[0, 1]``."""

    x: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] knots (raw scores), increasing
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [T] calibrated values at the knots
    n_pos: int = 0
    n_neg: int = 0
    resolution: float = 0.0  # raw scores are rounded to multiples of this (0: not rounded; older artifacts)

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        """Fit on raw ``scores: [P]`` with binary ``labels: [P]`` (1 = same individual)."""
        from sklearn.isotonic import IsotonicRegression

        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
        ok = np.isfinite(scores)
        scores, labels = scores[ok], labels[ok]
        self.resolution = resolution_of(scores)
        scores = quantize(scores, self.resolution)
        self.n_pos, self.n_neg = int(labels.sum()), int(len(labels) - labels.sum())
        if self.n_pos == 0 or self.n_neg == 0:
            raise ValueError(
                f"calibration needs same- and different-individual pairs, got {self.n_pos} same and "
                f"{self.n_neg} different: the gallery shortlist is too small or has a single individual"
            )
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(scores, labels)
        self.x = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated ``[P]`` values in ``[0, 1]`` (NaN stays NaN: no score for that pair)."""
        if len(self.x) == 0:
            raise ValueError("calibrator is not fitted")
        scores = quantize(scores, self.resolution)
        out = np.interp(scores, self.x, self.y)
        out[~np.isfinite(scores)] = np.nan
        return out

    def to_dict(self) -> dict:
        return {"x": self.x.tolist(), "y": self.y.tolist(), "n_pos": self.n_pos, "n_neg": self.n_neg,
                "resolution": self.resolution}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> IsotonicCalibrator:
        return cls(np.asarray(d["x"], float), np.asarray(d["y"], float), int(d["n_pos"]), int(d["n_neg"]),
                   float(d.get("resolution", 0.0)))  # fmt: skip

    def save(self, path: str | Path) -> None:
        write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> IsotonicCalibrator:
        return cls.from_dict(json.loads(Path(path).read_text()))


def fuse_scores(calibrated: pd.DataFrame, weights: dict[str, float] | None = None) -> np.ndarray:
    """Weighted mean over the columns of ``calibrated: [P x S]`` (one column per source), ignoring NaN.

    A pair no source scored gets NaN. ``weights`` defaults to 1 for every column.
    """
    values = calibrated.to_numpy(dtype=np.float64)
    w = np.array([float((weights or {}).get(c, 1.0)) for c in calibrated.columns])
    present = np.isfinite(values)
    num = np.where(present, values, 0.0) @ w
    den = present.astype(float) @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
