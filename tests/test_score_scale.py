"""workflow.score_scale: the final model's scores carried onto the scale its thresholds were tuned on."""

import numpy as np

from workflow.score_scale import quantile_map


def test_quantile_map_keeps_order_and_takes_the_reference_scale():
    rng = np.random.default_rng(0)
    final = rng.normal(0.80, 0.05, 500)  # the whole-gallery model: every score higher
    reference = rng.normal(0.74, 0.05, 5000)  # the split heads on the same queries
    mapped = quantile_map(final, reference)
    assert np.array_equal(np.argsort(final, kind="stable"), np.argsort(mapped, kind="stable"))
    assert abs(np.median(mapped) - np.median(reference)) < 0.01
    # a threshold tuned on the reference scale now splits the mapped scores as it splits the reference
    t = 0.72
    assert abs(np.mean(mapped < t) - np.mean(reference < t)) < 0.02


def test_quantile_map_ties_non_finite_and_empty_reference():
    out = quantile_map(np.array([3.0, 1.0, 2.0, 2.0, np.inf, -np.inf]), np.array([10.0, 20.0, 30.0, 40.0]))
    assert out[2] == out[3] and out[1] < out[2] < out[0]
    assert np.isinf(out[4]) and np.isinf(out[5])
    same = np.array([0.2, 0.1])
    assert np.array_equal(quantile_map(same, np.array([])), same)
