"""WildFusion stage: sharding, calibration on gallery pairs, fusion and prediction."""

import numpy as np
import pandas as pd
import pytest
from fixtures import textured_image, warp_image

from workflow.calibration import IsotonicCalibrator
from workflow.match import FeatureStore, extract_dataset, score_shard_cached, shard_sources
from workflow.matcher_keys import extractor_identity, matcher_key
from workflow.matchers import create_matcher
from workflow.pair_stage import predict_queries, predict_stage, source_scores
from workflow.stage_io import atomic_path
from workflow.thresholds import pair_scorer, top_per_source
from workflow.wildfusion import fit_calibrator, fuse


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """Four textured images (two views each of two 'individuals') with a validated-metadata table."""
    from PIL import Image

    root = tmp_path_factory.mktemp("imgs")
    rows = []
    for k, (seed, warp) in enumerate([(1, 0), (1, 5), (2, 0), (2, 6)]):
        img = textured_image(96, seed=seed)
        if warp:
            img = warp_image(img, seed=warp)
        path = root / f"i{k}.png"
        Image.fromarray(img).save(path)
        rows.append({"image_id": f"i{k}", "identity": f"id{seed}", "abspath": str(path), "sha1": f"{k:040d}"})
    return pd.DataFrame(rows)


def test_shards_partition_the_sources():
    pairs = pd.DataFrame({"query": list("abcdefg") * 2, "candidate": list("gfedcba") * 2})
    shards = [set(shard_sources(pairs, i, 3)) for i in range(3)]
    assert set().union(*shards) == set("abcdefg")
    assert sum(len(s) for s in shards) == 7
    with pytest.raises(ValueError, match="outside"):
        shard_sources(pairs, 3, 3)


def test_sharded_scores_equal_unsharded(tiny_images, tmp_path):
    conf = {"resize": 96, "max_keypoints": 128}
    manifest = extract_dataset(tiny_images, "rootsift", conf, tmp_path / "cache")
    store = FeatureStore(manifest, capacity=2)
    ids = tiny_images["image_id"].tolist()
    pairs = pd.DataFrame([(a, b) for a in ids for b in ids if a != b], columns=["query", "candidate"])
    matcher = create_matcher("rootsift", **conf)

    def score_shard(part):
        return score_shard_cached(part, lambda: matcher, store)[0]

    whole = score_shard(pairs).sort_values(["query", "candidate"]).reset_index(drop=True)
    parts = [score_shard(pairs[pairs["query"].isin(shard_sources(pairs, i, 3))]) for i in range(3)]
    sharded = pd.concat(parts).sort_values(["query", "candidate"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, sharded)
    same = whole.set_index(["query", "candidate"])["score"]
    assert same[("i0", "i1")] > same[("i0", "i2")]  # a warped view matches better than another pattern
    assert store.loads >= 4  # the LRU store reloads evicted images instead of holding everything


def test_extraction_is_cached_per_image(tiny_images, tmp_path):
    conf = {"resize": 96, "max_keypoints": 64}
    first = extract_dataset(tiny_images, "orb", conf, tmp_path)
    assert (first["keypoints"] >= 0).all()
    again = extract_dataset(tiny_images, "orb", conf, tmp_path)
    assert (again["keypoints"] == -1).all()  # nothing re-extracted
    assert matcher_key("orb", conf) == matcher_key("orb", {**conf, "ratio": 0.5, "batch_size": 2})
    assert matcher_key("orb", conf) != matcher_key("orb", {**conf, "max_keypoints": 65})


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "shard0.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a shard")
            raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_top_per_source_and_pair_scorer():
    rows, best = top_per_source(np.array([0, 0, 2, 2]), np.array([0.1, 0.7, np.nan, 0.3]), 3)
    assert rows.tolist() == [1, -1, 3] and best[0] == 0.7 and best[1] == -np.inf
    identities = np.array(["a", "a", "b", "b"], dtype=object)
    scorer = pair_scorer(np.array([0, 0, 1]), np.array([1, 2, 3]), np.array([0.9, 0.5, 0.8]), identities)
    top_id, top = scorer(np.array([0, 1]), np.array([2, 3]))
    assert top_id.tolist() == ["b", "b"] and top.tolist() == [0.5, 0.8]
    top_id, top = scorer(np.array([0]), np.array([3]))
    assert top.tolist() == [-np.inf]  # no candidate left in the pseudo-gallery


def _toy_pairs():
    meta = pd.DataFrame(
        {
            "image_id": ["g1", "g2", "g3", "g4", "q1", "q2"],
            "identity": ["a", "a", "b", "b", "", ""],
            "split": ["database"] * 4 + ["query"] * 2,
        }
    )
    pairs = pd.DataFrame(
        {
            "query": ["q1", "q1", "q2", "q2", "g1", "g1", "g2", "g2", "g3", "g3", "g4", "g4"],
            "candidate": ["g1", "g3", "g3", "g2", "g2", "g3", "g1", "g4", "g4", "g1", "g3", "g2"],
            "cosine": [0.9, 0.4, 0.5, 0.45, 0.8, 0.3, 0.8, 0.35, 0.7, 0.2, 0.7, 0.25],
            "kind": ["query"] * 4 + ["gallery"] * 8,
        }
    )
    return meta, pairs


def test_fusion_hand_example():
    meta, pairs = _toy_pairs()
    shards = {"m": pd.DataFrame({"query": ["q1", "q2", "g1", "g1", "g2", "g3"],
                                 "candidate": ["g1", "g2", "g2", "g3", "g1", "g4"],
                                 "score": [50.0, 3.0, 40.0, 2.0, 40.0, 30.0]})}  # fmt: skip
    raw = source_scores(pairs, shards)
    assert raw["m"].isna().sum() == 6  # unscored pairs stay NaN
    identity = dict(zip(meta["image_id"], meta["identity"]))
    cal = {"cosine": fit_calibrator(pairs, raw["cosine"].to_numpy(), identity),
           "m": fit_calibrator(pairs, raw["m"].to_numpy(), identity)}  # fmt: skip
    # gallery cosine: same-individual pairs 0.8, 0.8, 0.7, 0.7 above every different pair -> 1 vs 0
    assert cal["cosine"].predict(np.array([0.9, 0.1])).tolist() == [1.0, 0.0]
    out = fuse(raw[["cosine", "m"]], cal, None)
    q = out.iloc[:4]
    # q1-g1: cosine 0.9 -> 1 and m 50 -> 1, fused 1; q1-g3: no m score, cosine 0.4 lies between the knots
    # 0.35 (-> 0) and 0.7 (-> 1), so (0.4 - 0.35) / 0.35 = 1/7
    assert q["fused"].tolist()[:2] == pytest.approx([1.0, 1 / 7])
    preds = predict_queries(pairs.iloc[:4], out["fused"].to_numpy()[:4], np.array(["q1", "q2"], object), identity)
    # q2-g3: cosine 0.5 -> 3/7; q2-g2: cosine 0.45 -> 2/7 and m 3 -> 1/28 (knots 2 -> 0, 30 -> 1): mean 0.16
    assert preds["top_identity"].tolist() == ["a", "b"]
    assert preds["top_score"].tolist() == pytest.approx([1.0, 3 / 7])
    fixed, info, _ = predict_stage(meta, pairs, out["fused"].to_numpy(), 0.9, {}, "D")
    assert fixed["identity"].tolist() == ["a", "new_individual"] and info["source"] == "config"


def test_calibration_counts_come_from_gallery_pairs_only():
    meta, pairs = _toy_pairs()
    identity = dict(zip(meta["image_id"], meta["identity"]))
    cal = fit_calibrator(pairs, pairs["cosine"].to_numpy(), identity)
    assert (cal.n_pos, cal.n_neg) == (4, 4)
    assert isinstance(cal, IsotonicCalibrator)


def test_feature_cache_key_follows_the_extractor_weights(tmp_path, monkeypatch):
    """Replacing a learned extractor's weight file (same path) gives a new feature cache key."""
    weights = tmp_path / "superpoint_v1.pth"
    weights.write_bytes(b"old weights")
    conf = {"resize": 96, "extractor_weights": str(weights)}
    key = matcher_key("superpoint-lightglue", conf, weights=extractor_identity("superpoint-lightglue", conf))
    weights.write_bytes(b"new weights")
    assert matcher_key("superpoint-lightglue", conf, weights=extractor_identity("superpoint-lightglue", conf)) != key
    # hub-cache weights (no explicit file) are identified by the file found there, random ones as random
    monkeypatch.setattr("workflow.matchers.hub_checkpoint_dir", lambda: tmp_path / "empty")
    assert extractor_identity("superpoint-lightglue", {}) == "random"
    assert extractor_identity("orb", {}) == ""  # no learned weights: the key is that of the settings alone


def test_trained_auto_keeps_the_source_only_where_the_gallery_says_it_helps():
    """wildfusion.trained: auto judges both fusions on the gallery's simulated splits (no query row is read)."""
    from workflow.wildfusion import choose_trained

    rng = np.random.default_rng(0)
    ids = np.repeat([f"id{i}" for i in range(30)], 4)
    meta = pd.DataFrame({"image_id": [f"g{i}" for i in range(len(ids))], "identity": ids, "split": "database"})
    a, b = np.meshgrid(np.arange(len(ids)), np.arange(len(ids)), indexing="ij")
    keep = a != b
    a, b = a[keep], b[keep]
    same = ids[a] == ids[b]
    pairs = pd.DataFrame({"query": meta["image_id"].to_numpy()[a], "candidate": meta["image_id"].to_numpy()[b],
                          "kind": "gallery"})  # fmt: skip
    sharp = pd.DataFrame({"fused": np.where(same, 0.8, 0.3) + rng.normal(0, 0.1, len(a))})
    blurred = pd.DataFrame({"fused": np.where(same, 0.6, 0.4) + rng.normal(0, 0.3, len(a))})
    tuning = {"new_fraction": 0.33, "query_fraction": 0.3, "repeats": 3, "grid_size": 21, "seed": 0}
    chosen, report = choose_trained(meta, pairs, sharp, blurred, tuning)
    assert report["used"] and chosen is sharp and report["with_trained"] > report["without_trained"]
    chosen, report = choose_trained(meta, pairs, blurred, sharp, tuning)
    assert not report["used"] and chosen is sharp and report["with_trained"] < report["without_trained"]
