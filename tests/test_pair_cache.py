"""The pair-level match cache (workflow/pair_cache.py): hits and misses, keys, atomic parts, concurrent jobs,
and shards with a warm or partly warm cache equal to cold ones byte for byte."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fixtures import textured_image, warp_image

from workflow import match
from workflow.pair_cache import PairCache, cache_enabled, pair_cache_key

CONF = {"resize": 96, "max_keypoints": 128}


def _sha(seed: int) -> str:
    return hashlib.sha1(str(seed).encode()).hexdigest()


def test_hit_and_miss(tmp_path):
    cache = PairCache(tmp_path, "rootsift", "k1")
    a, b = [_sha(0), _sha(1)], [_sha(1), _sha(0)]
    scores, hit = cache.lookup(a, b)
    assert not hit.any() and scores.dtype == np.float32
    assert cache.add(a[:1], b[:1], np.array([7.5], np.float32)) is not None
    assert cache.add([], [], np.zeros(0)) is None
    # the same object and a fresh reader (a later job) see the pair; the reversed pair is another entry
    for reader in (cache, PairCache(tmp_path, "rootsift", "k1")):
        scores, hit = reader.lookup(a, b)
        assert hit.tolist() == [True, False] and scores[0] == np.float32(7.5)
    assert not PairCache(tmp_path, "rootsift", "k2").lookup(a, b)[1].any()
    with pytest.raises(ValueError, match="aligned"):
        cache.add(a, b[:1], np.ones(2))
    with pytest.raises(ValueError, match="not a hex content hash: 'id7'"):
        cache.lookup(["id7"], [_sha(0)])


def test_key_changes_with_settings_not_with_speed():
    base = pair_cache_key("rootsift", CONF)
    assert base == pair_cache_key("rootsift", dict(CONF))
    assert base != pair_cache_key("akaze", CONF)
    for change in ({"ratio": 0.7}, {"mutual": False}, {"resize": 128}, {"max_keypoints": 64},
                   {"score": "ransac_inliers"}, {"confidence_threshold": 0.1}):  # fmt: skip
        assert pair_cache_key("rootsift", {**CONF, **change}) != base, change
    # batch sizes only chunk the OpenCV matchers' one-by-one matching
    assert pair_cache_key("rootsift", {**CONF, "batch_size": 3, "extract_batch_size": 1}) == base
    with pytest.raises(ValueError, match="known matchers"):
        pair_cache_key("nope", {})


def test_learned_key_covers_numerics_and_weights(tmp_path, monkeypatch):
    pytest.importorskip("kornia")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    conf = {"allow_random_weights": True, "device": "cpu"}
    base = pair_cache_key("superpoint-lightglue", conf)
    assert pair_cache_key("superpoint-lightglue", {**conf, "batch_size": 4}) != base
    assert pair_cache_key("superpoint-lightglue", {**conf, "mixed_precision": True}) != base
    weights = tmp_path / "lg.pth"
    weights.write_bytes(b"one")
    one = pair_cache_key("superpoint-lightglue", {**conf, "weights": str(weights)})
    weights.write_bytes(b"other")
    assert pair_cache_key("superpoint-lightglue", {**conf, "weights": str(weights)}) not in (one, base)
    assert cache_enabled("rootsift", False) and not cache_enabled("superpoint-lightglue", False)
    assert cache_enabled("superpoint-lightglue", True)


def test_failed_write_leaves_no_part(tmp_path, monkeypatch):
    cache = PairCache(tmp_path, "rootsift", "k")
    cache.add([_sha(0)], [_sha(1)], [1.0])

    def boom(self, path, **kw):
        Path(path).write_bytes(b"half a parquet")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        cache.add([_sha(2)], [_sha(3)], [2.0])
    monkeypatch.undo()
    assert [p.name.startswith("part-") for p in cache.folder.iterdir()] == [True]
    scores, hit = PairCache(tmp_path, "rootsift", "k").lookup([_sha(0), _sha(2)], [_sha(1), _sha(3)])
    assert hit.tolist() == [True, False]


def _job(args):
    root, job, n, max_parts = args
    cache = PairCache(root, "rootsift", "k", max_parts=max_parts)
    for step in range(n):
        # every job writes its own pairs and one pair that all jobs share (same score: a deterministic matcher)
        ids = [job * 1000 + step, -1]
        cache.lookup([_sha(i) for i in ids], [_sha(i + 1) for i in ids])
        cache.add([_sha(i) for i in ids], [_sha(i + 1) for i in ids], [float(ids[0]), -1.0])
    return job


@pytest.mark.parametrize("max_parts", [1000, 3])
def test_concurrent_jobs_lose_nothing(tmp_path, max_parts):
    """Processes adding to (and, with few max_parts, compacting) one folder at once: every pair survives."""
    jobs, steps = 4, 6
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(jobs) as pool:
        assert sorted(pool.map(_job, [(str(tmp_path), j, steps, max_parts) for j in range(jobs)])) == list(range(jobs))
    ids = [j * 1000 + s for j in range(jobs) for s in range(steps)] + [-1]
    scores, hit = PairCache(tmp_path, "rootsift", "k").lookup([_sha(i) for i in ids], [_sha(i + 1) for i in ids])
    assert hit.all()
    assert scores.tolist() == [float(i) for i in ids]
    assert not [p for p in (tmp_path / "rootsift" / "k").iterdir() if not p.name.startswith("part-")]
    if max_parts == 3:
        assert len(list((tmp_path / "rootsift" / "k").glob("part-*.parquet"))) < jobs * steps


def _dataset(folder: Path, n: int, changed: int | None = None) -> pd.DataFrame:
    """``n`` images: pairs of views of n // 2 textures; image ``changed`` gets other content."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = textured_image(96, seed=i // 2)
        image = warp_image(image, seed=i) if i % 2 else image
        if i == changed:
            image = textured_image(96, seed=100 + i)
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        rows.append({"image_id": f"id{i}", "abspath": str(path), "sha1": hashlib.sha1(path.read_bytes()).hexdigest()})
    return pd.DataFrame(rows)


def _pairs(n: int) -> pd.DataFrame:
    ids = [f"id{i}" for i in range(n)]
    rows = [(q, c, r) for q in ids for r, c in enumerate(x for x in ids if x != q)]
    return pd.DataFrame(rows, columns=["query", "candidate", "rank"])


def _shard(tmp_path, tag, meta, pairs, cache_root=None, shard=0, n_shards=1, name="rootsift", conf=CONF, extra=()):
    manifest = match.extract_dataset(meta, name, conf, tmp_path / "features")
    manifest_path = tmp_path / f"{tag}.manifest.tsv"
    match.write_tsv(manifest, manifest_path)
    pairs_path = tmp_path / f"{tag}.pairs.parquet"
    pairs.to_parquet(pairs_path, index=False)
    out, cost = tmp_path / f"{tag}.parquet", tmp_path / f"{tag}.cost.json"
    argv = ["shard", "--matcher", name, "--conf", json.dumps(conf), "--shortlist", str(pairs_path),
            "--features", str(manifest_path), "--shard", str(shard), "--n-shards", str(n_shards),
            "--out", str(out), "--cost", str(cost), *extra]  # fmt: skip
    match.main(argv + (["--pair-cache", str(cache_root)] if cache_root else []))
    return out.read_bytes(), json.loads(cost.read_text())


def test_warm_and_grown_shards_equal_cold_byte_for_byte(tmp_path):
    meta = _dataset(tmp_path / "img", 8)
    cache = tmp_path / "pairs"
    small = _pairs(6)  # the first run knows 6 of the 8 images
    small_meta = meta.iloc[:6]
    cold_small, cost = _shard(tmp_path, "cold_small", small_meta, small)
    first, cost = _shard(tmp_path, "first", small_meta, small, cache)
    assert first == cold_small
    assert cost["pairs_requested"] == cost["pairs_matched"] == 30 and cost["pairs_from_cache"] == 0
    warm, cost = _shard(tmp_path, "warm", small_meta, small, cache)
    assert warm == cold_small
    assert cost["pairs_from_cache"] == 30 and cost["pairs_matched"] == 0
    # the grown data: only pairs with one of the two new images are matched, the shard equals a cold one
    grown = _pairs(8)
    cold, _ = _shard(tmp_path, "cold", meta, grown)
    matched = 0
    for shard in range(2):
        cold_shard, _ = _shard(tmp_path, f"cold{shard}", meta, grown, None, shard, 2)
        warm_shard, cost = _shard(tmp_path, f"grown{shard}", meta, grown, cache, shard, 2)
        assert warm_shard == cold_shard
        assert cost["pairs_requested"] == cost["pairs_from_cache"] + cost["pairs_matched"]
        matched += cost["pairs_matched"]
    assert matched == 56 - 30  # 8 x 7 ordered pairs, 6 x 5 of them scored in the first run
    grown_all, cost = _shard(tmp_path, "grown_all", meta, grown, cache)
    assert grown_all == cold and cost["pairs_matched"] == 0 and cost["pairs_from_cache"] == 56
    # an image whose content changes (new sha1) misses every pair it is in, and nothing else
    changed_meta = _dataset(tmp_path / "img_changed", 8, changed=3)
    changed, cost = _shard(tmp_path, "changed", changed_meta, grown, cache)
    assert cost["pairs_matched"] == 14  # id3 as the query (7 pairs) and as the candidate (7 pairs)
    cold_changed, _ = _shard(tmp_path, "cold_changed", changed_meta, grown)
    assert changed == cold_changed
    scores = pd.read_parquet(tmp_path / "changed.parquet")
    assert scores[["query", "candidate"]].equals(pd.read_parquet(tmp_path / "cold.parquet")[["query", "candidate"]])


def test_learned_matchers_are_cached_only_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("kornia")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))  # no weights: random ones (seeded)
    conf = {"resize": 96, "max_keypoints": 64, "allow_random_weights": True, "filter_threshold": 0.0,
            "confidence_threshold": 0.0, "device": "cpu"}  # fmt: skip
    meta, pairs, cache = _dataset(tmp_path / "img", 4), _pairs(4), tmp_path / "pairs"
    kw = {"name": "superpoint-lightglue", "conf": conf}
    _, cost = _shard(tmp_path, "off", meta, pairs, cache, **kw)
    assert cost["pair_cache"] == "" and cost["pairs_matched"] == 12 and not cache.exists()
    first, cost = _shard(tmp_path, "on", meta, pairs, cache, extra=("--learned-pairs", "True"), **kw)
    assert cost["pairs_matched"] == 12 and cost["pair_cache"].startswith(str(cache / "superpoint-lightglue"))
    again, cost = _shard(tmp_path, "again", meta, pairs, cache, extra=("--learned-pairs", "true"), **kw)
    assert cost["pairs_from_cache"] == 12 and cost["pairs_matched"] == 0 and again == first
