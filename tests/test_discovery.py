"""Discovery: clustering of new photos on hand-made score graphs, the auto threshold, the 2026 format."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workflow import NEW_INDIVIDUAL
from workflow.discovery import (
    check_clusters,
    choose_discovery_threshold,
    cluster_graph,
    cluster_queries,
    discovery_curve,
    main,
    name_clusters,
    query_query_pairs,
    read_clusters,
    score_rows,
    score_table,
)


def _pairs(rows):
    return pd.DataFrame(rows, columns=["query", "candidate", "score"])


def test_cluster_graph_merges_strong_pairs_and_keeps_missing_apart():
    # 0-1-2 strongly linked, 3-4 linked, 5 alone; no pair between the groups (similarity 0)
    i = np.array([0, 1, 0, 3])
    j = np.array([1, 2, 2, 4])
    s = np.array([0.9, 0.8, 0.85, 0.7])
    labels = cluster_graph(6, i, j, s, threshold=0.5)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]
    assert len(set(labels.tolist())) == 3


def test_average_linkage_needs_the_mean_not_one_strong_pair():
    # 0-1 strong; 2 links only to 1: mean similarity of {0,1} to 2 is (0 + 0.8) / 2 = 0.4
    i, j, s = np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.8])
    assert len(set(cluster_graph(3, i, j, s, threshold=0.5).tolist())) == 2
    assert len(set(cluster_graph(3, i, j, s, threshold=0.3).tolist())) == 1


def test_threshold_orders_the_partitions():
    rng = np.random.default_rng(0)
    n = 12
    i, j = np.triu_indices(n, 1)
    s = rng.uniform(0, 1, len(i))
    counts = [len(set(cluster_graph(n, i, j, s, t).tolist())) for t in (0.0, 0.3, 0.6, 0.9, 1.01)]
    assert counts == sorted(counts)
    assert counts[0] == 1 and counts[-1] == n


def test_unscored_pairs_take_the_base_similarity():
    base = np.full((3, 3), 0.6)
    # scored pair (0, 1) = 0.1 replaces the base; (0, 2) and (1, 2) fall back to 0.6
    labels = cluster_graph(3, np.array([0]), np.array([1]), np.array([0.1]), threshold=0.5, base=base)
    assert labels[0] != labels[1] and len(set(labels.tolist())) == 2
    assert len(set(cluster_graph(3, np.array([0]), np.array([1]), np.array([0.1]), 0.5).tolist())) == 3


def test_duplicate_and_reversed_pairs_take_the_max():
    labels = cluster_graph(2, np.array([0, 1]), np.array([1, 0]), np.array([0.1, 0.9]), threshold=0.5)
    assert labels[0] == labels[1]


def test_cluster_queries_anchors_known_and_names_new():
    labels = pd.DataFrame(
        {
            "image_id": ["q1", "q2", "q3", "q4", "q5"],
            "identity": ["A", NEW_INDIVIDUAL, NEW_INDIVIDUAL, "B", NEW_INDIVIDUAL],
        }
    )
    # q1 (known A) is strongly linked to q2: q2 stays new (anchoring is the label stage's decision)
    pairs = _pairs([("q1", "q2", 0.99), ("q2", "q3", 0.9), ("q3", "q5", 0.1), ("q4", "q5", 0.95)])
    out = cluster_queries("Lynx", labels, pairs, threshold=0.5)
    assert out["image_id"].tolist() == ["q1", "q2", "q3", "q4", "q5"]
    c = dict(zip(out["image_id"], out["cluster"]))
    assert c["q1"] == "A" and c["q4"] == "B"
    assert c["q2"] == c["q3"] == "new_Lynx_1"
    assert c["q5"] == "new_Lynx_2"
    assert out["anchored"].tolist() == [True, False, False, True, False]


def test_cluster_names_avoid_existing_identities():
    names = name_clusters(np.array([3, 3, 1]), "D", taken={"new_D_1"})
    assert names.tolist() == ["new_D_2", "new_D_2", "new_D_3"]


def test_cluster_queries_without_new_photos_and_without_pairs():
    labels = pd.DataFrame({"image_id": ["a", "b"], "identity": ["X", "Y"]})
    assert cluster_queries("D", labels, _pairs([]), 0.5)["cluster"].tolist() == ["X", "Y"]
    labels = pd.DataFrame({"image_id": ["a", "b"], "identity": [NEW_INDIVIDUAL] * 2})
    assert cluster_queries("D", labels, _pairs([]), 0.5)["cluster"].tolist() == ["new_D_1", "new_D_2"]


def test_query_query_pairs_are_unordered_and_top_k():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(8, 4)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"q{k}" for k in range(8)]
    pairs = query_query_pairs(ids, emb, k=3)
    assert (pairs["query"] < pairs["candidate"]).all()
    assert not pairs.duplicated(["query", "candidate"]).any()
    assert set(pairs["kind"]) == {"query_query"}
    assert 8 * 3 / 2 <= len(pairs) <= 8 * 3
    a, b = ids.index(pairs["query"].iloc[0]), ids.index(pairs["candidate"].iloc[0])
    assert pairs["cosine"].iloc[0] == pytest.approx(float(emb[a] @ emb[b]), abs=1e-5)


def _gallery_graph(seed=0, n_ind=20, per=4, noise=0.25):
    """Gallery pairs where same-individual pairs score high and others low (with noise)."""
    rng = np.random.default_rng(seed)
    identities = np.repeat([f"ind{k}" for k in range(n_ind)], per).astype(object)
    i, j = np.triu_indices(len(identities), 1)
    same = identities[i] == identities[j]
    s = np.clip(np.where(same, 0.8, 0.1) + rng.normal(0, noise, len(i)), 0, 1)
    keep = same | (s > 0.3)  # a sparse graph: most different pairs were never shortlisted
    return identities, i[keep], j[keep], s[keep]


def test_auto_threshold_picks_best_ami_on_the_gallery():
    identities, i, j, s = _gallery_graph()
    tuning = {"new_fraction": 0.33, "query_fraction": 0.3, "repeats": 3, "grid_size": 21, "seed": 0}
    t, info, curve = choose_discovery_threshold("auto", "D", identities, i, j, s, tuning)
    assert info["source"] == "auto" and info["criterion"] == "AMI"
    assert list(curve.columns) == ["threshold", "AMI", "ARI", "clusters"]
    assert curve.loc[curve["threshold"] == t, "AMI"].iloc[0] == pytest.approx(curve["AMI"].max())
    assert 0.2 < t < 0.8  # between the two score populations
    assert curve["AMI"].max() > 0.8
    fixed, info, curve = choose_discovery_threshold({"D": 0.4, "default": "auto"}, "D", identities, i, j, s, tuning)
    assert fixed == 0.4 and info["source"] == "config" and curve.empty


def test_discovery_curve_is_deterministic():
    identities, i, j, s = _gallery_graph(seed=3)
    grid = np.linspace(0, 1, 11)
    a = discovery_curve(identities, i, j, s, grid, repeats=2, seed=5)
    b = discovery_curve(identities, i, j, s, grid, repeats=2, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_scores_and_references():
    clusters = pd.DataFrame(
        {"image_id": ["a", "b", "c", "d", "e"], "cluster": ["K", "new_D_1", "new_D_1", "new_D_2", "new_D_2"]}
    )
    labels = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "identity": ["K"] + [NEW_INDIVIDUAL] * 4})
    truth = {"a": "K", "b": "n1", "c": "n1", "d": "n2", "e": "n2"}
    rows = {r["stage"]: r for r in score_rows("D", clusters, labels, truth)}
    assert rows["discovery"]["ARI"] == pytest.approx(1.0) and rows["discovery"]["AMI"] == pytest.approx(1.0)
    assert rows["all_alone"]["clusters"] == 5 and rows["new_together"]["clusters"] == 2
    assert rows["new_together"]["ARI"] < 1 and rows["all_alone"]["ARI"] < 1
    table = score_table(list(rows.values()))
    assert table["stage"].tolist()[:2] == ["discovery", "discovery"]
    assert table["dataset"].tolist()[:2] == ["D", "ALL"]
    unscored = score_rows("D", clusters, labels, None)
    assert all(np.isnan(r["ARI"]) for r in unscored)


def test_submission_format(tmp_path):
    meta = pd.DataFrame(
        {
            "image_id": ["g1", "0007", "q2", "q3"],
            "identity": ["A", "", "", ""],
            "split": ["database", "query", "query", "query"],
            "dataset": ["D"] * 4,
        }
    )
    meta.to_csv(tmp_path / "D.tsv", sep="\t", index=False)
    pd.DataFrame({"image_id": ["q3", "0007", "q2"], "cluster": ["new_D_1", "A", "new_D_1"],
                  "anchored": [False, True, False]}).to_csv(tmp_path / "c.tsv", sep="\t", index=False)  # fmt: skip
    out = tmp_path / "clusters.csv"
    main(
        ["submission", "--clusters", str(tmp_path / "c.tsv"), "--metadata", str(tmp_path / "D.tsv"), "--out", str(out)]
    )
    text = out.read_text().splitlines()
    assert text == ["image_id,cluster", "0007,A", "q2,new_D_1", "q3,new_D_1"]  # ids stay strings, metadata order
    sub = read_clusters(tmp_path / "c.tsv")
    with pytest.raises(ValueError, match="miss 1 query"):
        check_clusters(sub, ["0007", "q2", "q3", "q4"])
    with pytest.raises(ValueError, match="more than once"):
        check_clusters(pd.concat([sub, sub.iloc[:1]]), ["0007", "q2", "q3"])


def test_cluster_size_plot(tmp_path):
    from workflow.discovery_plot import plot_cluster_sizes

    clusters = pd.DataFrame(
        {"image_id": ["a", "b", "c", "d"], "cluster": ["K", "new_D_1", "new_D_1", "new_D_2"],
         "anchored": ["True", "False", "False", "False"]}
    )  # fmt: skip
    solution = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "identity": ["K", "n1", "n1", "n1"],
            "new": ["False", "True", "True", "True"],
        }
    )
    drawn = plot_cluster_sizes(clusters, solution, "D", tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert drawn["found"] == {1: 1, 2: 1} and drawn["true"] == {3: 1}


TARGETS = ["results/clusters.csv", "results/discovery_scores.tsv", "results/plots/discovery/LynxTiny.png"]


@pytest.fixture(scope="module")
def tiny_discovery(tmp_path_factory):
    """The tiny demo through baseline, WildFusion and discovery (matchers on the query x query pairs too)."""
    from conftest import REPO
    from workflow_helpers import make_workdir, snakemake

    base = tmp_path_factory.mktemp("discovery")
    work = make_workdir(base / "work")
    overlay = base / "discovery.yaml"
    overlay.write_text(
        "stages: [wildfusion, discovery]\n"
        "submission: {stage: wildfusion}\n"
        "wildfusion: {matchers: [rootsift], shards: 1}\n"
        "discovery: {stage: wildfusion, k: 4, matchers: [rootsift], shards: 2}\n"
    )
    config = ["--configfile", str(REPO / "tests" / "configs" / "tiny.yaml"), str(overlay)]
    snakemake(work, "--cores", "2", *config, "--", *TARGETS, timeout=1800)
    return work, config


def test_tiny_workflow_writes_clusters_and_scores(tiny_discovery):
    work, _ = tiny_discovery
    meta = pd.read_csv(work / "resources/demo/metadata.csv", dtype=str, keep_default_na=False)
    clusters = pd.read_csv(work / "results/clusters.csv", dtype=str, keep_default_na=False)
    assert list(clusters.columns) == ["image_id", "cluster"]
    assert sorted(clusters["image_id"]) == sorted(meta.loc[meta["split"] == "query", "image_id"])
    scores = pd.read_csv(work / "results/discovery_scores.tsv", sep="\t")
    datasets = sorted(meta["dataset"].unique())
    assert set(scores["dataset"]) == {*datasets, "ALL"}
    assert set(scores["stage"]) == {"discovery", "all_alone", "new_alone", "new_together"}
    assert scores["ARI"].notna().all() and scores["AMI"].notna().all()
    for dataset in datasets:
        folder = work / "results/stages/discovery" / dataset
        cost = json.loads((folder / "cost.json").read_text())
        assert cost["query_query_pairs"] > 0 and cost["sources"] == ["cosine", "rootsift"]
        info = json.loads((folder / "threshold.json").read_text())
        assert info["source"] == "auto" and info["criterion"] == "AMI"
        labels = pd.read_csv(work / f"results/stages/wildfusion/{dataset}/predictions.tsv", sep="\t", dtype=str)
        mine = read_clusters(folder / "clusters.tsv").merge(labels, on="image_id")
        known = mine["identity"] != NEW_INDIVIDUAL
        assert (mine.loc[known, "cluster"] == mine.loc[known, "identity"]).all()  # anchored
        assert mine.loc[~known, "cluster"].str.startswith(f"new_{dataset}_").all()
    shards = list((work / "results/discovery").glob("*/matches/rootsift/*/shard*.parquet"))
    assert len(shards) == 2 * len(datasets)


def test_tiny_clusters_do_not_read_the_solution(tiny_discovery):
    from workflow_helpers import snakemake

    work, config = tiny_discovery
    before = {p: p.read_text() for p in sorted((work / "results/stages/discovery").glob("*/clusters.tsv"))}
    scores_before = (work / "results/discovery_scores.tsv").read_text()
    solution = work / "resources/demo/solution.csv"
    sol = pd.read_csv(solution, dtype=str, keep_default_na=False)
    sol["identity"] = sol["identity"].sample(frac=1.0, random_state=0).to_numpy()  # scrambled truth
    sol.to_csv(solution, index=False)
    # rerun discovery and what reads it; the stages upstream (which may read the solution for recall) stay as they are
    rules = ["discovery", "discovery_submission", "score_discovery", "plot_discovery"]
    snakemake(work, "--cores", "2", *config, "--forcerun", "discovery", "--allowed-rules", *rules, "--", *TARGETS)
    after = {p: p.read_text() for p in before}
    assert after == before
    assert (work / "results/discovery_scores.tsv").read_text() != scores_before
