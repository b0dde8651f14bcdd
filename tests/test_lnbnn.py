"""LNBNN one-vs-many local stage (workflow/lnbnn.py): votes, leave-one-image-out, shortlist union."""

import numpy as np
import pandas as pd
from conftest import REPO

from workflow.lnbnn import build_index, image_votes, lnbnn_votes, pair_scores, score_dataset
from workflow.matchers.features import LocalFeatures
from workflow.shortlist import build_shortlist, union_candidates

CONFIG_TINY = REPO / "tests" / "configs" / "tiny.yaml"
CONF = {"k": 3, "top": 5, "nprobe": 4, "flat_max": 100000, "max_descriptors": None}


def _feats(desc):
    desc = np.asarray(desc, np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    n = len(desc)
    return LocalFeatures(np.zeros((n, 2)), desc, np.ones(n), (8, 8), extractor="rootsift")


def _world(seed=0, individuals=6, per=2, n_desc=20, dim=16):
    """Gallery images whose descriptors are noisy copies of their individual's pattern, plus one query of
    individual i3 and one of nobody."""
    rng = np.random.default_rng(seed)
    patterns = {f"i{j}": rng.normal(size=(n_desc, dim)) for j in range(individuals)}
    rows, store = [], {}
    for ident, pat in patterns.items():
        for m in range(per):
            image_id = f"{ident}_{m}"
            store[image_id] = _feats(pat + 0.15 * rng.normal(size=pat.shape))
            rows.append((image_id, ident, "database"))
    store["q_known"] = _feats(patterns["i3"] + 0.15 * rng.normal(size=(n_desc, dim)))
    store["q_new"] = _feats(rng.normal(size=(n_desc, dim)))
    rows += [("q_known", "", "query"), ("q_new", "", "query")]
    meta = pd.DataFrame(rows, columns=["image_id", "identity", "split"])
    return meta, store


def test_votes_once_per_individual_against_the_k_plus_first():
    dist = np.array([[1.0, 2.0, 3.0, 10.0]])
    owner = np.array([[0, 0, 1, 2]])
    votes = lnbnn_votes(dist, owner, k=3, n_owners=3)
    # owner 0 once (its nearest, 1.0), owner 1 at 3.0, owner 2 is the normaliser: no vote
    assert np.allclose(votes, [9.0, 7.0, 0.0])


def test_planted_match_found_that_the_global_shortlist_misses():
    meta, store = _world()
    _, scores, cost = score_dataset(meta, store, CONF)
    q = scores[(scores["image_id"] == "q_known")].sort_values("rank")
    assert q["identity"].iloc[0] == "i3"
    assert cost["descriptors"] == 12 * 20
    # a global embedding that puts q_known far from i3: its top-2 global shortlist misses i3
    ids = meta["image_id"].to_numpy()
    emb = np.eye(len(ids), dtype=np.float32)
    emb[ids == "q_known", :] = 0
    emb[ids == "q_known", 0] = 1.0  # next to i0_0
    emb[ids == "q_known", 2] = 0.9  # and i1_0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = build_shortlist(meta, ids, emb, k_query=2, k_gallery=2)
    glob = pairs[(pairs["query"] == "q_known")]["candidate"].str[:2]
    assert "i3" not in set(glob)
    union = union_candidates(scores, meta, individuals=1, per_individual=2, cosine_of=lambda q, c: np.zeros(len(c)))
    local = set(union.loc[union["query"] == "q_known", "candidate"])
    assert local == {"i3_0", "i3_1"}
    mapped = pair_scores(pd.concat([pairs, union.assign(rank=99, cosine=0.0)]), meta, scores)
    best = mapped[mapped["query"] == "q_known"].sort_values("score").iloc[-1]
    assert best["candidate"].startswith("i3_")


def test_gallery_scores_never_use_the_images_own_descriptors():
    meta, store = _world(seed=1, per=1)  # one photo per individual: only itself could vote for its individual
    _, scores, _ = score_dataset(meta, store, CONF)
    gal = scores[scores["kind"] == "gallery"]
    own = gal["image_id"].str[:2] == gal["identity"]
    assert not own.any()
    # the leave-out equals an index built without the image
    gal_meta = meta[meta["split"] == "database"].reset_index(drop=True)
    owners = np.unique(gal_meta["identity"], return_inverse=True)[1]
    desc = [store[g].descriptors for g in gal_meta["image_id"]]
    row_image = np.repeat(np.arange(len(desc)), [len(d) for d in desc])
    full = build_index(np.concatenate(desc), 10**6, 1)
    for i in range(len(desc)):
        left = image_votes(full, desc[i], 3, row_image, owners, owners.max() + 1, leave_out=i)
        keep = row_image != i
        without = build_index(np.concatenate(desc)[keep], 10**6, 1)
        ref = image_votes(without, desc[i], 3, np.flatnonzero(keep) * 0 + row_image[keep], owners, owners.max() + 1)
        assert np.allclose(left, ref, atol=1e-5)


def test_ivf_index_agrees_with_flat_on_the_top_individual():
    meta, store = _world(seed=2, n_desc=60)
    _, flat, _ = score_dataset(meta, store, CONF)
    _, ivf, cost = score_dataset(meta, store, {**CONF, "flat_max": 10, "nprobe": 64})
    assert cost["index"] == "IndexIVFFlat"
    top = lambda t: t[t["rank"] == 1].set_index("image_id")["identity"].sort_index()  # noqa: E731
    assert (top(flat) == top(ivf)).mean() >= 0.9


def test_union_ranks_after_the_global_and_recall_reports_each_origin():
    from workflow.shortlist import shortlist_recall, unite

    meta, _ = _world()
    ids = meta["image_id"].to_numpy()
    emb = np.eye(len(ids), dtype=np.float32)
    pairs = build_shortlist(meta, ids, emb, k_query=2, k_gallery=2)
    local = pd.DataFrame({"query": ["q_known", "q_known"], "candidate": ["i3_0", pairs["candidate"].iloc[0]],
                          "kind": "query"})  # fmt: skip
    united = unite(pairs, local, ids, emb)
    added = united[united["origin"] == "local"]
    assert list(added["candidate"]) == ["i3_0"] and list(added["rank"]) == [3]
    assert (united["origin"] == "both").sum() == 1 and len(united) == len(pairs) + 1
    solution = pd.DataFrame({"image_id": ["q_known"], "identity": ["i3"], "new": ["False"]})
    rec = shortlist_recall(united, meta, solution)
    assert (rec["recall_global"], rec["recall_local"], rec["recall_union"]) == (0.0, 1.0, 1.0)
    assert rec["k"] == 2 and rec["recall"] == 1.0


def _lnbnn_on(tmp_path):
    """An overlay of the tiny config with the shipped LNBNN settings (the tiny config turns them off)."""
    path = tmp_path / "lnbnn_on.yaml"
    path.write_text("shortlist: {lnbnn_individuals: 5, lnbnn_images: 1}\nwildfusion: {lnbnn: auto}\n")
    return str(path)


def test_lnbnn_rules_run_on_the_tiny_demo(tmp_path):
    """The index, the union shortlist and its recall, the pair scores and a fusion that judges them, end to end."""
    import json

    from workflow_helpers import make_workdir, snakemake

    work = make_workdir(tmp_path)
    overlay = tmp_path / "fast.yaml"
    overlay.write_text("wildfusion: {trained: false}\n")  # no dual-backbone model to wait for
    snakemake(work, "results/stages/wildfusion/LynxTiny/threshold.json", "--cores", "2",
              "--configfile", str(CONFIG_TINY), _lnbnn_on(tmp_path), str(overlay))  # fmt: skip
    cost = json.loads(next((work / "results/lnbnn/LynxTiny").glob("*/cost.json")).read_text())
    assert cost["descriptors"] > 0 and cost["index"] == "IndexFlatL2"
    pairs = pd.read_parquet(next((work / "results/shortlist/LynxTiny").glob("*.parquet")))
    assert set(pairs["origin"]) <= {"global", "local", "both"} and (pairs["origin"] != "global").any()
    threshold = json.loads((work / "results/stages/wildfusion/LynxTiny/threshold.json").read_text())
    assert set(threshold["lnbnn"]) == {"used", "with_lnbnn", "without_lnbnn", "gain", "tolerance", "rule"}


def test_lnbnn_auto_is_chosen_on_the_gallery_without_the_answer_key(tmp_path):
    """The rules that build, unite and fuse the LNBNN scores never read solution.csv: a shuffled answer key
    cannot change their choice (the fuse step judges the source on the gallery's simulated splits)."""
    from workflow_helpers import make_workdir, snakemake

    work = make_workdir(tmp_path)
    out = snakemake(work, "-n", "-p", "--forceall", "--configfile", str(CONFIG_TINY), _lnbnn_on(tmp_path)).stdout
    commands = [line for line in out.splitlines() if line.startswith("Shell command:")]
    for step in ("workflow.lnbnn index", "workflow.lnbnn pairs", "workflow.shortlist ", "workflow.wildfusion"):
        mine = [c for c in commands if step in c]
        assert mine, f"{step} missing from the dry-run"
        assert all("solution" not in c for c in mine), f"{step} reads the answer key"
    fuse = [c for c in commands if "workflow.wildfusion fuse" in c]
    assert fuse and all("--lnbnn auto" in c and " lnbnn " in c for c in fuse)
    assert all("--lnbnn results/lnbnn/" in c for c in commands if "workflow.shortlist " in c)


def test_choose_source_reports_under_its_own_name():
    from workflow.wildfusion import LNBNN, choose_source

    ids = np.repeat([f"id{i}" for i in range(20)], 3)
    meta = pd.DataFrame({"image_id": [f"g{i}" for i in range(len(ids))], "identity": ids, "split": "database"})
    a, b = np.meshgrid(np.arange(len(ids)), np.arange(len(ids)), indexing="ij")
    a, b = a[a != b], b[a != b]
    same = ids[a] == ids[b]
    pairs = pd.DataFrame({"query": meta["image_id"].to_numpy()[a], "candidate": meta["image_id"].to_numpy()[b],
                          "kind": "gallery"})  # fmt: skip
    rng = np.random.default_rng(3)
    sharp = pd.DataFrame({"fused": np.where(same, 0.8, 0.3) + rng.normal(0, 0.1, len(a))})
    noisy = pd.DataFrame({"fused": rng.normal(0, 1, len(a))})
    tuning = {"new_fraction": 0.33, "query_fraction": 0.3, "repeats": 3, "grid_size": 21, "seed": 0}
    chosen, report = choose_source(LNBNN, meta, pairs, noisy, sharp, tuning)
    assert chosen is sharp and not report["used"] and report["with_lnbnn"] < report["without_lnbnn"]
