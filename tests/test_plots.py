"""Report figures: the score/new-share curve, the example pick, the match drawing and the scores table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workflow import NEW_INDIVIDUAL as NEW
from workflow.plots import new_share_curve, pick_examples, plot_matches, plot_new_share, scores_html, used_point

SOLUTION = pd.DataFrame(
    {
        "image_id": ["q1", "q2", "q3", "q4", "other"],
        "identity": ["a", "b", "x", "y", "z"],
        "dataset": ["D", "D", "D", "D", "E"],
        "new": ["False", "False", "True", "True", "False"],
    }
)
PREDICTIONS = pd.DataFrame(
    {
        "image_id": ["q1", "q2", "q3", "q4"],
        "identity": ["a", NEW, NEW, "b"],  # the stage's own threshold: 0.6
        "top_identity": ["a", "c", "a", "b"],
        "top_score": [0.9, 0.5, 0.3, 0.7],
    }
)


def test_new_share_curve_hand_case():
    curve = new_share_curve(PREDICTIONS, SOLUTION)
    assert list(curve.columns) == ["threshold", "new_share", "score", "BAKS", "BAUS"]
    assert curve["threshold"].iloc[:4].tolist() == [0.3, 0.5, 0.7, 0.9]
    assert curve["threshold"].iloc[4] > 0.9
    assert curve["new_share"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve["BAKS"].tolist() == [0.5, 0.5, 0.5, 0.5, 0.0]
    assert curve["BAUS"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert curve["score"].tolist() == pytest.approx([0.0, 0.5, 0.5, math.sqrt(0.5), 0.0])
    used = used_point(PREDICTIONS, SOLUTION)
    assert used["new_share"] == 0.5 and used["score"] == pytest.approx(0.5)


def test_new_share_curve_images_without_score_are_always_new():
    pred = PREDICTIONS.assign(
        top_identity=["a", "c", "", "b"], top_score=pd.Series([0.9, 0.5, None, 0.7], dtype=object)
    )
    curve = new_share_curve(pred, SOLUTION)
    assert curve["new_share"].min() == 0.25  # q3 is new at every threshold
    assert curve["new_share"].max() == 1.0


def test_new_share_curve_of_a_gate_falls_back_to_the_base_prediction():
    pred = PREDICTIONS.assign(base_identity=["a", NEW, NEW, "b"])
    curve = new_share_curve(pred, SOLUTION)
    # below every threshold: the base predictions (share 0.5); above none: the top identities (share 0)
    assert curve["new_share"].tolist() == [0.0, 0.25, 0.5, 0.5, 0.5]
    assert curve["score"].iloc[-1] == pytest.approx(used_point(pred, SOLUTION)["score"])


def test_plot_new_share_writes_png(tmp_path):
    out = tmp_path / "D.png"
    curve = new_share_curve(PREDICTIONS, SOLUTION)
    plot_new_share({"s1": (curve, used_point(PREDICTIONS, SOLUTION))}, "D", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pick_examples_best_candidate_of_first_known_queries():
    pairs = pd.DataFrame(
        {
            "query": ["10", "10", "9", "9", "2", "g1", "11"],
            "candidate": ["g1", "g2", "g3", "g1", "g2", "g2", "g1"],
            "kind": ["query"] * 5 + ["gallery", "query"],
            "fused": [0.2, 0.8, 0.5, 0.1, 0.3, 0.99, 0.4],
        }
    )
    ex = pick_examples(pairs, 2, known={"10", "9", "11"})
    assert ex["query"].tolist() == ["9", "10"]  # numeric order, "2" is not known, gallery rows ignored
    assert ex["candidate"].tolist() == ["g3", "g2"]
    assert pick_examples(pairs, 5)["query"].tolist() == ["2", "9", "10", "11"]


def _textured(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((8, 8, 1), dtype=np.uint8))


def test_plot_matches_rootsift_and_failing_matcher(tmp_path, monkeypatch):
    from PIL import Image

    from workflow import matchers as matchers_mod

    img = _textured(0)
    Image.fromarray(img).save(tmp_path / "q.png")
    Image.fromarray(np.roll(img, 5, axis=1)).save(tmp_path / "g.png")
    examples = pd.DataFrame({"query": ["q"], "candidate": ["g"], "fused": [0.7]})
    paths = {"q": str(tmp_path / "q.png"), "g": str(tmp_path / "g.png")}

    real = matchers_mod.create_matcher

    def fake_create(name, **conf):
        if name == "broken":
            raise matchers_mod.WeightsNotFoundError("no weights for broken")
        return real(name, **conf)

    monkeypatch.setattr(matchers_mod, "create_matcher", fake_create)
    out = tmp_path / "matches.png"
    conf = {"resize": 96, "max_keypoints": 64}
    plot_matches(examples, paths, {"rootsift": conf, "broken": {}}, "D", out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the pair itself has matches
    from workflow.plots import pair_matches

    _, _, k0, k1, c = pair_matches("rootsift", conf, img, np.roll(img, 5, axis=1))
    assert len(k0) == len(k1) == len(c) > 0


def test_scores_html_is_a_table():
    table = pd.DataFrame(
        {
            "stage": ["s", "s"],
            "dataset": ["D", "ALL"],
            "BAKS": [0.5, 0.5],
            "BAUS": [float("nan"), 1.0],
            "score": [0.0, 0.70711],
            "new_share": [0.25, 0.25],
        }
    )
    text = scores_html(table)
    assert "<table>" in text and "<th>BAKS</th>" in text and "0.7071" in text
    assert '<tr style="font-weight:bold">' in text
