"""Decisions that do not flip on noise (workflow/robust.py)."""

import numpy as np
import pytest

from workflow.robust import plateau_pick, prefer_simpler, standard_error


def flat_top_curves(rng, n_splits=10, bump=0.0):
    """Per-split score curves on 41 grid points: a broad flat top at 0.85 with split noise of 0.02."""
    grid = np.linspace(0.2, 0.6, 41)
    shape = 0.85 - 4 * np.clip(np.abs(grid - 0.4) - 0.05, 0, None) ** 1.5
    shape[20] += bump  # one point barely above its neighbours
    return grid, shape[None] + rng.normal(0, 0.02, (n_splits, 1)) + rng.normal(0, 1e-4, (n_splits, len(grid)))


def test_plateau_pick_is_the_middle_of_the_flat_top():
    grid, curves = flat_top_curves(np.random.default_rng(0))
    pick = plateau_pick(grid, curves)
    assert pick.plateau[0] < 0.36 and pick.plateau[1] > 0.44
    assert pick.threshold == pytest.approx(0.4, abs=0.011)
    assert pick.tolerance == pytest.approx(standard_error(curves[:, pick.index]), rel=0.5)
    report = pick.report()
    assert report["plateau"] == list(pick.plateau) and "runner_up" in report


def test_plateau_pick_does_not_follow_a_tiny_peak():
    """The old rule (argmax) jumps to whichever point of a flat top is highest; the plateau rule does not."""
    rng = np.random.default_rng(1)
    grid, curves = flat_top_curves(rng)
    picks = set()
    for seed in range(5):
        noisy = curves * (1 + 1e-6 * np.random.default_rng(seed).normal(size=curves.shape))
        picks.add(plateau_pick(grid, noisy).threshold)
    steps = np.diff(grid).max()
    assert max(picks) - min(picks) <= steps + 1e-12


def test_one_split_falls_back_to_the_exact_best():
    grid = np.array([0.1, 0.2, 0.3, 0.4])
    pick = plateau_pick(grid, np.array([[0.1, 0.5, 0.5, 0.2]]))
    assert pick.tolerance == 0 and pick.plateau == (0.2, 0.3) and pick.threshold == 0.2


def test_plateau_pick_checks_shapes():
    with pytest.raises(ValueError, match=r"\[S x 3\]"):
        plateau_pick(np.arange(3.0), np.zeros((2, 4)))


def test_prefer_simpler_within_the_spread():
    rng = np.random.default_rng(0)
    simple = 0.8 + rng.normal(0, 0.03, 10)
    noise_gain = simple + 0.001 + rng.normal(0, 0.01, 10)  # mean gain far below the spread of the difference
    wins, report = prefer_simpler(simple, noise_gain, names=("a", "b"))
    assert not wins and report["gain"] < report["tolerance"]
    clear_gain = simple + 0.05 + rng.normal(0, 0.005, 10)
    assert prefer_simpler(simple, clear_gain)[0]
    # min_gain is a floor on the tolerance
    assert not prefer_simpler(simple, simple + 0.01, min_gain=0.02)[0]
    with pytest.raises(ValueError, match="same splits"):
        prefer_simpler(simple, simple[:3])
