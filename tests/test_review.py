"""Review page data: the priority order, the cards, the match lines and the escaping of untrusted ids."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from workflow.review.cards import review_table, top_candidates
from workflow.review.images import normalised_lines
from workflow.review.page import page_data
from workflow.review.render import render_page, safe_json

HOSTILE = '</script><img src=x onerror="alert(1)">&amp;'


def _tables():
    meta = pd.DataFrame({
        "image_id": ["g1", "g2", "g3", "q1", "q2", HOSTILE],
        "identity": ["ann", "bob", "bob", "", "", ""],
        "split": ["database"] * 3 + ["query"] * 3,
    })  # fmt: skip
    pairs = pd.DataFrame({
        "query": ["q1", "q1", "q2", "q2", HOSTILE, HOSTILE],
        "candidate": ["g1", "g2", "g1", "g3", "g2", "g3"],
        "kind": "query",
        "fused": [0.95, 0.10, 0.52, 0.50, 0.30, 0.29],
    })  # fmt: skip
    decision = pd.DataFrame({
        "image_id": ["q1", "q2", HOSTILE],
        "identity": ["ann", "ann", "new_individual"],
        "decided_by": ["rerank:label", "rerank:label", "rerank:new"],
        "top_score": [0.9, 0.5, 0.3],
    })  # fmt: skip
    other = decision.assign(identity=["ann", "bob", "new_individual"])
    return meta, pairs, decision, {"baseline": other}


def test_uncertain_first():
    meta, pairs, decision, stages = _tables()
    review = review_table(pairs, meta, decision, stages, threshold=0.5, band=0.1)
    # q2: fused at the threshold, two identities 0.02 apart, baseline disagrees; q1: confident and agreed
    assert review["image_id"].tolist() == ["q2", HOSTILE, "q1"]
    q2 = review.iloc[0]
    assert q2["near"] > 0.7 and q2["tight"] > 0.7 and q2["disagree"] == 1.0 and q2["uncertain"]
    assert not review.iloc[2]["uncertain"]
    clusters = pd.DataFrame({"image_id": ["q1", "q2"], "cluster": ["ann", "D_new_1"], "anchored": [True, False]})
    assert review_table(pairs, meta, decision, stages, 0.5, clusters).set_index("image_id")["cluster"].to_dict() == {
        "q1": "",
        "q2": "D_new_1",
        HOSTILE: "",
    }
    cands = top_candidates(pairs, meta, k=1)
    assert sorted(cands[["query", "candidate", "identity"]].values.tolist()) == sorted(
        [["q1", "g1", "ann"], ["q2", "g1", "ann"], [HOSTILE, "g2", "bob"]]
    )


def test_lines_are_fractions_of_each_frame():
    k0, k1 = np.array([[10.0, 20.0], [0.0, 0.0]]), np.array([[50.0, 25.0], [5.0, 5.0]])
    lines = normalised_lines(k0, k1, np.array([0.2, 0.9]), (40, 20), (100, 100), n=1)
    assert lines == [[0.0, 0.0, 0.05, 0.05, 0.9]]


def test_page_escapes_every_id(tmp_path):
    meta, pairs, decision, stages = _tables()
    from PIL import Image

    for image_id in meta["image_id"]:
        Image.new("RGB", (30, 20), (90, 120, 150)).save(tmp_path / f"{abs(hash(image_id))}.png")
    meta["abspath"] = [str(tmp_path / f"{abs(hash(i))}.png") for i in meta["image_id"]]
    data, review = page_data("D", "rerank", meta, pairs, 0.5, decision, stages, None, lambda pairs: {}, {"top_k": 2})
    page = render_page(data, HOSTILE)
    assert HOSTILE not in page and "<img src=x" not in page  # the title is HTML-escaped, the data JSON-escaped
    assert len(re.findall(r"</script>", page, flags=re.I)) == 3  # the data block's, the lazy block's, the script's
    block = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', page, re.S).group(1)
    parsed = json.loads(block)
    assert [c["image_id"] for c in parsed["cards"]] == review["image_id"].tolist()
    assert set(parsed["images"]) == set(meta["image_id"]) - {"g3"} | {"g3"}
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in parsed["images"].values())
    assert "<" not in safe_json({"a": "</script>"})


def test_candidates_are_individuals_and_the_uncertain_share_is_a_rule():
    meta, pairs, decision, stages = _tables()
    cands = top_candidates(pairs, meta, k=5)
    hostile = cands[cands["query"] == HOSTILE]
    assert hostile[["candidate", "identity", "images"]].values.tolist() == [["g2", "bob", 2]]  # g3: bob again
    assert cands.loc[cands["query"] == "q2", "identity"].tolist() == ["ann", "bob"]
    for share, flagged in [(0.0, 0), (0.2, 1), (0.5, 1), (1.0, 1)]:  # the others have priority 0: never flagged
        review = review_table(pairs, meta, decision, stages, 0.5, band=0.1, uncertain_share=share)
        assert int(review["uncertain"].sum()) == flagged, share


def test_the_card_says_which_step_decided_with_its_own_threshold(tmp_path):
    from PIL import Image

    from workflow.review.cards import explain

    steps = {"steps": [{"source": "rerank", "new_below": 0.432}, {"source": "xgboost", "override_above": 0.97}]}
    assert explain("cascade", "rerank:label", "LynxDemo_000", 0.61, steps) == (
        "rerank score 0.610 is at or above its threshold 0.432: LynxDemo_000"
    )
    assert explain("cascade", "rerank:new", "new_individual", 0.3, steps).endswith("below its threshold 0.432: "
                                                                                  "a new individual")  # fmt: skip
    assert "override threshold 0.970" in explain("cascade", "xgboost:override", "ann", 0.99, steps)
    assert explain("wildfusion", "", "ann", 0.5, {"threshold": 0.45}) == (
        "wildfusion score 0.500 is at or above its threshold 0.450: ann"
    )
    meta, pairs, decision, stages = _tables()
    Image.new("RGB", (30, 20), (90, 120, 150)).save(tmp_path / "x.png")
    meta = meta.assign(abspath=str(tmp_path / "x.png"), orientation="left", date="2020-05-01")
    data, _ = page_data("D", "cascade", meta, pairs, 0.5, decision, stages, None, lambda p: {}, {"match_lines": 0},
                        steps)  # fmt: skip
    text = json.dumps([c["why"] for c in data["cards"]])
    assert "rerank:" not in text and "threshold 0.432" in text
    assert data["about"]["q1"] == "2020-05-01 · left" and data["files"]["q1"] == (tmp_path / "x.png").as_uri()


def test_outputs_follow_the_umask(tmp_path):
    import os

    from workflow.stage_io import atomic_path

    old = os.umask(0o022)
    try:
        for mask, mode in [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)]:
            os.umask(mask)
            with atomic_path(tmp_path / f"page{mask}.html") as tmp:
                tmp.write_text("x")
            assert (tmp_path / f"page{mask}.html").stat().st_mode & 0o777 == mode, oct(mask)
    finally:
        os.umask(old)


def test_every_shown_candidate_gets_its_match_lines(tmp_path):
    from PIL import Image

    meta, pairs, decision, stages = _tables()
    for image_id in meta["image_id"]:
        Image.new("RGB", (30, 20), (90, 120, 150)).save(tmp_path / f"{abs(hash(image_id))}.png")
    meta["abspath"] = [str(tmp_path / f"{abs(hash(i))}.png") for i in meta["image_id"]]
    asked = []

    def lines_for(wanted):
        asked.append(list(wanted))
        return {p: {"matcher": "m", "candidate": p[1], "total": 3, "lines": [[0.1, 0.1, 0.5, 0.5, 1]]} for p in wanted}

    data, _ = page_data("D", "rerank", meta, pairs, 0.5, decision, stages, None, lines_for, {"top_k": 2})
    # one matching per shown candidate (the best pair once), in card order; nothing else is matched
    assert sorted(asked[0]) == sorted([("q2", "g1"), ("q2", "g3"), (HOSTILE, "g2"), ("q1", "g1"), ("q1", "g2")])
    q2 = next(c for c in data["cards"] if c["image_id"] == "q2")
    assert q2["matches"]["candidate"] == "g1" and not q2["candidates"][0]["lines"]  # the card's own
    assert q2["candidates"][1]["lines"] and data["lazy"]["lines"]["q2"]["g3"]["candidate"] == "g3"
    assert set(data["lazy"]["lines"]) == {"q1", "q2"}  # the best pairs are in the cards, not in the lazy block
    page = render_page(data, "D")  # the lazy block is a JSON block of its own, parsed on demand
    lazy = re.search(r'<script type="application/json" id="review-lazy">(.*?)</script>', page, re.S).group(1)
    assert json.loads(lazy) == data["lazy"] and '"lazy"' not in page.split('id="review-lazy"')[0]
    asked.clear()
    data, _ = page_data("D", "rerank", meta, pairs, 0.5, decision, stages, None, lines_for,
                        {"top_k": 2, "match_candidates": 1})  # fmt: skip
    assert sorted(asked[0]) == sorted([("q2", "g1"), (HOSTILE, "g2"), ("q1", "g1")])
    assert data["lazy"]["lines"] == {} and not any(c["lines"] for card in data["cards"] for c in card["candidates"])


def test_an_individuals_other_gallery_photos_are_linked_not_embedded(tmp_path):
    from PIL import Image

    meta, pairs, decision, stages = _tables()
    extra = pd.DataFrame({"image_id": ["g4", "g5"], "identity": ["ann", "carl"], "split": "database"})
    meta = pd.concat([meta, extra], ignore_index=True)
    for image_id in meta["image_id"]:
        Image.new("RGB", (30, 20), (90, 120, 150)).save(tmp_path / f"{abs(hash(image_id))}.png")
    meta["abspath"] = [str(tmp_path / f"{abs(hash(i))}.png") for i in meta["image_id"]]
    data, _ = page_data("D", "rerank", meta, pairs, 0.5, decision, stages, None, lambda p: {}, {"top_k": 2})
    # ann (g1, g4) and bob (g2, g3) are shown candidates with more than one photo; carl is no candidate
    assert data["gallery"] == {"ann": ["g1", "g4"], "bob": ["g2", "g3"]}
    assert "g4" in data["files"] and "g4" not in data["images"]  # loaded from its file only when shown
    assert data["files"]["g4"] == (tmp_path / f"{abs(hash('g4'))}.png").resolve().as_uri()
    assert "g5" not in data["files"]
