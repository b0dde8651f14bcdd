"""Decisions that do not flip on noise: plateau thresholds and the simpler-wins rule.

Every ``auto`` choice of the workflow is a maximum of a score simulated on open-set splits of the gallery
(:mod:`workflow.thresholds`). Such curves are flat at the top: two thresholds a grid step apart often differ by
less than the last digits of the inputs move between machines. The rules here make the choice depend on the
shape of the curve, not on which point of a flat top happens to be highest:

- :func:`plateau_pick` (a threshold): the tolerance is the standard error over the splits of the score at the
  best threshold; the plateau is the widest contiguous run of grid points whose mean score is within the tolerance
  of the best, and the chosen threshold is the grid point in its middle. A 1e-6 change of the inputs moves the
  plateau's ends by at most one grid point, so the choice by at most one grid step.
- :func:`prefer_simpler` (two alternatives on the same splits, e.g. with and without re-ranking): the more
  complex alternative wins only when its mean score beats the simpler one by more than the standard error of
  their per-split difference (and ``min_gain``); within that, the simpler one wins.

Both write what they saw (plateau, tolerance, runner-up, the two scores) into the stage's ``threshold.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Scores closer than this are equal whatever the spread (floating-point summation order).
EPS = 1e-9


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values: [S]`` (0 for fewer than two)."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return 0.0
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


@dataclass(frozen=True)
class PlateauPick:
    """A threshold chosen at the middle of the plateau of a simulated score curve."""

    threshold: float  # the chosen grid point
    index: int  # its position in the grid
    score: float  # mean simulated score there
    best_threshold: float  # the grid point of highest mean score (first one on ties)
    best_score: float
    tolerance: float  # standard error over the splits at the best grid point
    plateau: tuple[float, float]  # first and last grid point of the chosen run
    runner_up: tuple[float, float] | None  # (threshold, score) of the best point outside the plateau

    def report(self) -> dict:
        """JSON-ready description for ``threshold.json``."""
        return {
            "rule": "middle of the widest run of grid points within one standard error (over splits) of the best",
            "score": round(self.score, 6),
            "best": {"threshold": self.best_threshold, "score": round(self.best_score, 6)},
            "tolerance": round(self.tolerance, 6),
            "plateau": list(self.plateau),
            "runner_up": None
            if self.runner_up is None
            else {"threshold": self.runner_up[0], "score": round(self.runner_up[1], 6)},
        }


def plateau_pick(grid: np.ndarray, per_split: np.ndarray) -> PlateauPick:
    """The robust choice on ``grid: [T]`` (ascending) from the scores ``per_split: [S x T]`` of every split.

    The widest run within the tolerance wins; among runs of equal width, the one holding the best point, then
    the lower one.
    """
    grid = np.asarray(grid, np.float64)
    per_split = np.atleast_2d(np.asarray(per_split, np.float64))
    if per_split.shape[1] != len(grid) or len(grid) == 0:
        raise ValueError(f"per_split must be [S x {len(grid)}] for a grid of {len(grid)} points, got {per_split.shape}")
    mean = per_split.mean(axis=0)
    best = int(np.argmax(mean))
    tolerance = standard_error(per_split[:, best])
    within = mean >= mean[best] - tolerance - EPS
    runs, start = [], None
    for t, ok in enumerate([*within, False]):
        if ok and start is None:
            start = t
        elif not ok and start is not None:
            runs.append((start, t - 1))
            start = None
    lo, hi = max(runs, key=lambda r: (r[1] - r[0], r[0] <= best <= r[1], -r[0]))
    mid = (lo + hi) // 2
    outside = np.ones(len(grid), bool)
    outside[lo : hi + 1] = False
    runner = None
    if outside.any():
        r = int(np.flatnonzero(outside)[np.argmax(mean[outside])])
        runner = (float(grid[r]), float(mean[r]))
    return PlateauPick(float(grid[mid]), mid, float(mean[mid]), float(grid[best]), float(mean[best]), tolerance,
                       (float(grid[lo]), float(grid[hi])), runner)  # fmt: skip


def prefer_simpler(
    simple: np.ndarray, complex_: np.ndarray, *, min_gain: float = 0.0, names: tuple[str, str] = ("simple", "complex")
) -> tuple[bool, dict]:
    """Whether the complex alternative wins over the simple one, from their scores on the same splits (``[S]``).

    It wins only when its mean score is higher by more than ``max(min_gain, standard error of the per-split
    difference)``. Returns the verdict and a JSON-ready report (both means, the gain and the tolerance).
    """
    simple, complex_ = np.asarray(simple, np.float64), np.asarray(complex_, np.float64)
    if simple.shape != complex_.shape:
        raise ValueError(f"the two alternatives must be scored on the same splits: {simple.shape} vs {complex_.shape}")
    gain = float(complex_.mean() - simple.mean())
    tolerance = max(float(min_gain), standard_error(complex_ - simple))
    wins = bool(gain > tolerance + EPS)
    report = {
        names[0]: round(float(simple.mean()), 6),
        names[1]: round(float(complex_.mean()), 6),
        "gain": round(gain, 6),
        "tolerance": round(tolerance, 6),
        "rule": f"{names[1]} only when it gains more than the tolerance (standard error of the per-split difference)",
    }
    return wins, report
