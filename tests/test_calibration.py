import numpy as np
import pandas as pd
import pytest

from workflow.calibration import IsotonicCalibrator, fuse_scores


def test_calibration_is_monotone_and_in_unit_interval(tmp_path):
    rng = np.random.default_rng(0)
    same = rng.normal(30, 10, 300)
    diff = rng.normal(8, 6, 700)
    cal = IsotonicCalibrator().fit(np.r_[same, diff], np.r_[np.ones(300), np.zeros(700)])
    grid = np.linspace(-50, 120, 500)
    out = cal.predict(grid)
    assert np.all(np.diff(out) >= -1e-12)
    assert out.min() >= 0 and out.max() <= 1
    assert out[0] < 0.1 and out[-1] > 0.9
    cal.save(tmp_path / "c.json")
    again = IsotonicCalibrator.load(tmp_path / "c.json")
    assert np.allclose(again.predict(grid), out)
    assert (again.n_pos, again.n_neg) == (300, 700)


def test_calibration_keeps_missing_scores_missing():
    cal = IsotonicCalibrator().fit([0, 1, 2, 3], [0, 0, 1, 1])
    assert np.isnan(cal.predict([np.nan, 1.5])[0])


def test_calibration_needs_both_labels():
    with pytest.raises(ValueError, match="same- and different-individual"):
        IsotonicCalibrator().fit([1, 2, 3], [1, 1, 1])


def test_fusion_hand_computed():
    calibrated = pd.DataFrame(
        {"cosine": [0.2, 0.9, np.nan], "rootsift": [0.6, np.nan, np.nan], "akaze": [0.4, 0.5, np.nan]}
    )
    assert fuse_scores(calibrated)[:2] == pytest.approx([0.4, 0.7])
    assert np.isnan(fuse_scores(calibrated)[2])
    weighted = fuse_scores(calibrated, {"cosine": 2.0, "rootsift": 1.0, "akaze": 1.0})
    assert weighted[0] == pytest.approx((0.4 + 0.6 + 0.4) / 4)
    assert weighted[1] == pytest.approx((1.8 + 0.5) / 3)


def test_calibrator_ignores_noise_in_the_last_digits_of_tied_counts():
    """Counts are tied; 1e-6 relative noise must not order the labels of a tied group (a cross-machine amplifier)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 30, 2000).astype(float)
    labels = (rng.random(2000) < counts / 40).astype(float)
    base = IsotonicCalibrator().fit(counts, labels)
    for seed in range(3):
        noisy = counts * (1 + 1e-6 * np.random.default_rng(seed).standard_normal(len(counts)))
        cal = IsotonicCalibrator().fit(noisy, labels)
        assert np.array_equal(cal.x, base.x) and np.allclose(cal.y, base.y, atol=1e-12)
        assert np.allclose(cal.predict(noisy), base.predict(counts), atol=1e-12)
    assert base.resolution == 1e-3  # 4 digits below the leading digit of 29
    assert IsotonicCalibrator.from_dict(base.to_dict()).resolution == base.resolution
