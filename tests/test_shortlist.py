import numpy as np
import pandas as pd

from workflow.shortlist import build_shortlist, shortlist_recall, topk_inner_product


def test_topk_matches_brute_force():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(40, 8)).astype(np.float32)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    idx, sim = topk_inner_product(q, g, 7)
    brute = np.argsort(-(q @ g.T), axis=1)[:, :7]
    assert (idx == brute).all()
    assert np.allclose(sim, np.take_along_axis(q @ g.T, brute, 1), atol=1e-5)


def test_gallery_shortlist_excludes_self_and_caps_k():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(4, 3)).astype(np.float32)
    idx, _ = topk_inner_product(g, g, 10, exclude_self=True)
    assert idx.shape == (4, 3)
    assert not (idx == np.arange(4)[:, None]).any()


def test_build_shortlist_and_recall():
    meta = pd.DataFrame(
        {
            "image_id": ["g1", "g2", "g3", "q1", "q2"],
            "identity": ["a", "b", "c", "", ""],
            "split": ["database"] * 3 + ["query"] * 2,
        }
    )
    emb = np.eye(5, 3, dtype=np.float32)
    emb[3] = [1, 0.1, 0]  # q1 closest to g1
    emb[4] = [0, 0, 1]  # q2 closest to g3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = build_shortlist(meta, meta["image_id"].to_numpy(), emb, k_query=1, k_gallery=2)
    q = pairs[pairs["kind"] == "query"]
    assert q.set_index("query")["candidate"].to_dict() == {"q1": "g1", "q2": "g3"}
    assert (pairs["kind"] == "gallery").sum() == 6
    solution = pd.DataFrame({"image_id": ["q1", "q2"], "identity": ["a", "b"], "new": ["False", "False"]})
    rec = shortlist_recall(pairs, meta, solution)
    assert rec == {"k": 1, "known_queries": 2, "recall": 0.5}
