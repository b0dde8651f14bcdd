import math

import numpy as np
import pandas as pd
import pytest

from workflow import NEW_INDIVIDUAL as NEW
from workflow.metrics import baks, baus, geometric_score, score_predictions, score_table


def test_baks_is_balanced_over_individuals():
    # individual a: 3 images, 2 right; individual b: 1 image, right -> (2/3 + 1) / 2
    y_true = ["a", "a", "a", "b"]
    y_pred = ["a", "a", "b", "b"]
    assert baks(y_true, y_pred, [False] * 4) == pytest.approx((2 / 3 + 1) / 2)


def test_baus_counts_new_predictions_per_new_individual():
    # new individual x: 2 images, 1 predicted new; y: 1 image predicted as a known id -> (0.5 + 0) / 2
    y_true = ["x", "x", "y", "a"]
    y_pred = [NEW, "a", "a", "a"]
    is_new = [True, True, True, False]
    assert baus(y_true, y_pred, is_new) == pytest.approx(0.25)
    assert baks(y_true, y_pred, is_new) == pytest.approx(1.0)


def test_predicting_the_new_individuals_own_label_is_wrong():
    # the true label of a new animal is its own identity, but only "new_individual" counts for BAUS
    assert baus(["x"], ["x"], [True]) == 0.0


def test_geometric_mean_and_nan_counts_as_zero():
    assert geometric_score(0.64, 0.25) == pytest.approx(0.4)
    assert geometric_score(float("nan"), 0.5) == 0.0
    assert geometric_score(0.9, float("nan")) == 0.0


def test_dataset_without_new_individuals_scores_zero():
    result = score_predictions(["a", "b"], ["a", "b"], [False, False])
    assert result["BAKS"] == 1.0
    assert math.isnan(result["BAUS"])
    assert result["score"] == 0.0
    assert result["new_share"] == 0.0


def test_score_table_has_all_row_with_mean_of_dataset_scores():
    solution = pd.DataFrame(
        {
            "image_id": ["q1", "q2", "q3", "q4", "q5"],
            "identity": ["a", "b", "x", "c", "y"],
            "dataset": ["D1", "D1", "D1", "D2", "D2"],
            "new": ["False", "False", "True", "False", "True"],
        }
    )
    preds = pd.DataFrame({"image_id": ["q1", "q2", "q3", "q4", "q5"], "identity": ["a", "a", NEW, "c", "c"]})
    table = score_table("baseline", preds, solution)
    d1 = table.set_index("dataset").loc["D1"]
    assert d1["BAKS"] == pytest.approx(0.5) and d1["BAUS"] == 1.0
    assert d1["score"] == pytest.approx(math.sqrt(0.5))
    d2 = table.set_index("dataset").loc["D2"]
    assert d2["BAKS"] == 1.0 and d2["BAUS"] == 0.0 and d2["score"] == 0.0
    all_row = table.set_index("dataset").loc["ALL"]
    assert all_row["score"] == pytest.approx(math.sqrt(0.5) / 2)
    assert all_row["new_share"] == pytest.approx(1 / 5)
    assert list(table.columns) == ["stage", "dataset", "BAKS", "BAUS", "score", "new_share"]


def test_score_table_rejects_missing_and_duplicate_predictions():
    solution = pd.DataFrame(
        {"image_id": ["q1", "q2"], "identity": ["a", "b"], "dataset": ["D"] * 2, "new": ["False"] * 2}
    )
    with pytest.raises(ValueError, match="miss 1 query image"):
        score_table("s", pd.DataFrame({"image_id": ["q1"], "identity": ["a"]}), solution)
    with pytest.raises(ValueError, match="twice"):
        score_table("s", pd.DataFrame({"image_id": ["q1", "q1", "q2"], "identity": ["a"] * 3}), solution)


def test_metrics_match_a_brute_force_definition():
    rng = np.random.default_rng(0)
    ids = np.array(list("abcdefgh"), dtype=object)
    y_true = rng.choice(ids, 200)
    is_new = np.isin(y_true, ["g", "h"])
    y_pred = np.where(rng.random(200) < 0.3, NEW, rng.choice(ids[:6], 200)).astype(object)
    known = [np.mean(y_pred[y_true == k] == k) for k in sorted(set(y_true[~is_new]))]
    new = [np.mean(y_pred[y_true == k] == NEW) for k in sorted(set(y_true[is_new]))]
    assert baks(y_true, y_pred, is_new) == pytest.approx(np.mean(known))
    assert baus(y_true, y_pred, is_new) == pytest.approx(np.mean(new))
