"""k-reciprocal re-ranking on a hand-built similarity graph."""

import numpy as np
import pandas as pd
import pytest

from workflow.rerank import jaccard, reciprocal_sets, rerank_scores, similarity_edges

# One query q and three gallery images a, b, c. Symmetric similarities (best first):
#   q: a .9, b .5, c .1     a: q .9, b .8, c .2     b: a .8, q .5, c .3     c: b .3, a .2, q .1
PAIRS = pd.DataFrame(
    [
        ("q", "a", "query", 0.9),
        ("q", "b", "query", 0.5),
        ("q", "c", "query", 0.1),
        ("a", "b", "gallery", 0.8),
        ("b", "a", "gallery", 0.8),
        ("a", "c", "gallery", 0.2),
        ("b", "c", "gallery", 0.3),
        ("c", "b", "gallery", 0.3),
    ],
    columns=["query", "candidate", "kind", "fused"],
)


def _sets(k1, k2):
    sets = reciprocal_sets(similarity_edges(PAIRS, PAIRS["fused"].to_numpy()), k1, k2)
    return {o: set(g["member"]) for o, g in sets.groupby("owner")}


def test_reciprocal_sets_by_hand():
    # K1=2, K2=1: N(.,1) is q->a, a->q, b->a, c->b.
    assert _sets(2, 1) == {"q": {"q", "a"}, "a": {"a", "q", "b"}, "b": {"b"}, "c": {"c"}}


def test_jaccard_terms_and_final_score_by_hand():
    final, jac = rerank_scores(PAIRS, PAIRS["fused"].to_numpy(), k1=2, k2=1, lam=0.1)
    expected = [2 / 3, 0, 0, 1 / 3, 1 / 3, 0, 0, 0]  # q-a, q-b, q-c, a-b, b-a, a-c, b-c, c-b
    np.testing.assert_allclose(jac, expected)
    np.testing.assert_allclose(final, 0.9 * PAIRS["fused"].to_numpy() + 0.1 * np.array(expected))
    assert final[0] == pytest.approx(0.9 * 0.9 + 0.1 * 2 / 3)


def test_wide_radius_makes_every_set_the_whole_component():
    _, jac = rerank_scores(PAIRS, PAIRS["fused"].to_numpy(), k1=3, k2=3, lam=0.1)
    np.testing.assert_allclose(jac, 1.0)


def test_lambda_zero_is_identity_and_one_sided_pairs_are_symmetrised():
    score = PAIRS["fused"].to_numpy()
    final, _ = rerank_scores(PAIRS, score, k1=2, k2=1, lam=0.0)
    np.testing.assert_array_equal(final, score)
    edges = similarity_edges(PAIRS, score).set_index(["a", "b"])["s"]
    assert edges[("c", "a")] == edges[("a", "c")] == 0.2  # a->c only was scored
    assert ("q", "q") not in edges.index and len(edges) == 12


def test_asymmetric_scores_take_the_larger_and_empty_input_is_typed():
    pairs = pd.DataFrame({"query": ["a", "b"], "candidate": ["b", "a"]})
    edges = similarity_edges(pairs, np.array([0.2, 0.7]))
    assert edges["s"].tolist() == [0.7, 0.7]
    empty = pd.DataFrame({"query": [], "candidate": []}, dtype=object)
    assert jaccard(empty, pd.DataFrame({"owner": [], "member": []})).shape == (0,)
    with pytest.raises(ValueError, match="lambda"):
        rerank_scores(PAIRS, PAIRS["fused"].to_numpy(), 2, 1, lam=1.5)
