import json

import numpy as np
import pytest

from workflow import NEW_INDIVIDUAL as NEW
from workflow.baseline import cosine_scorer, nearest_neighbour
from workflow.robust import plateau_pick
from workflow.thresholds import (
    apply_threshold,
    resolve_threshold,
    simulate_open_set_split,
    threshold_curve,
    tune_threshold,
)


def test_split_holds_out_whole_individuals_and_keeps_a_gallery_image():
    ids = np.array(["a"] * 5 + ["b"] * 3 + ["c"] + ["d"] * 2 + ["e"] * 4, dtype=object)
    split = simulate_open_set_split(ids, 0.4, 0.3, np.random.default_rng(1))
    assert len(set(split.query) | set(split.gallery)) == len(ids)
    assert not set(split.query) & set(split.gallery)
    new_ids = set(ids[split.query[split.is_new]])
    assert len(new_ids) == 2
    assert not new_ids & set(ids[split.gallery])  # pseudo-new never in the pseudo-gallery
    for ident in set(ids[split.query[~split.is_new]]):
        assert ident in set(ids[split.gallery])  # pseudo-known always keeps a gallery image


def test_split_needs_two_individuals():
    with pytest.raises(ValueError, match="at least 2"):
        simulate_open_set_split(np.array(["a", "a"], dtype=object), 0.3, 0.3, np.random.default_rng(0))


def test_curve_and_pick_hand_case():
    top_id = np.array(["a", "b", "a", "c"], dtype=object)
    score = np.array([0.9, 0.8, 0.3, 0.2])
    truth = np.array(["a", "b", "x", "y"], dtype=object)
    is_new = np.array([False, False, True, True])
    curve = threshold_curve(top_id, score, truth, is_new, np.array([0.1, 0.5, 0.95]))
    assert curve["score"].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert plateau_pick(curve["threshold"].to_numpy(), curve["score"].to_numpy()[None]).threshold == 0.5


def test_apply_and_resolve():
    assert apply_threshold(np.array(["a", "b"], object), np.array([0.7, 0.2]), 0.5).tolist() == ["a", NEW]
    assert resolve_threshold({"D": 0.4, "default": "auto"}, "D") == 0.4
    assert resolve_threshold({"default": "auto"}, "E") == "auto"
    assert resolve_threshold(0.7, "E") == 0.7
    with pytest.raises(ValueError, match="dataset 'E'"):
        resolve_threshold("high", "E")


def test_auto_threshold_separates_clustered_embeddings():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(30, 16))
    ids = np.repeat(np.arange(30), 4).astype(str).astype(object)
    emb = centres[np.repeat(np.arange(30), 4)] + 0.35 * rng.normal(size=(120, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    threshold, curve, pick = tune_threshold(cosine_scorer(emb, ids), ids, repeats=3, seed=0)
    assert pick.plateau[0] <= threshold <= pick.plateau[1]
    assert curve["score"].max() > 0.8
    assert -1 <= threshold <= 1


def test_nearest_neighbour_chunks_agree():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(50, 8)), rng.normal(size=(20, 8))
    i1, s1 = nearest_neighbour(q, g, chunk=7)
    i2, s2 = nearest_neighbour(q, g, chunk=1000)
    assert (i1 == i2).all() and np.allclose(s1, s2)


def test_threshold_json_is_valid_json_without_nan(tmp_path):
    import numpy as np

    from workflow.stage_io import write_json

    write_json({"threshold": float("nan"), "score": np.float32("inf"), "curve": [np.float64(0.5), float("-inf")]},
               tmp_path / "threshold.json")  # fmt: skip
    text = (tmp_path / "threshold.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"threshold": None, "score": None, "curve": [0.5, None]}
