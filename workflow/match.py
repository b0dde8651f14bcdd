"""Local matching stage of WildFusion: per-image feature extraction, then sharded pair scoring.

Subcommands (one rule each):

``extract``  ``results/data/<dataset>.tsv`` -> ``results/features/<dataset>/<matcher>/<key>.tsv`` (a manifest:
             ``image_id, sha1, file, keypoints``). Features are extracted once per image and matcher and
             stored per image under ``<cache>/<matcher key>/<sha1[:2]>/<sha1>.npz``, keyed by the image's
             content hash and a hash of the extraction settings and of the learned extractor's weight file
             (its bytes, workflow/keys.py): an interrupted extraction resumes where it stopped, a new image
             costs one extraction and replaced weights extract anew.
``shard``    the shortlist's pairs of one shard of source images -> ``results/matches/<dataset>/<matcher>/<key>/
             shard<shard>.parquet`` (``query, candidate, score``). Shard ``i`` of ``n`` takes every ``n``-th source
             image in sorted order (query and gallery sources alike). Written atomically: a killed shard
             leaves nothing that looks finished, and a rerun redoes only unfinished shards. With
             ``--pair-cache`` a shard looks its pairs up in the pair-level score cache (workflow/pair_cache.py,
             keyed by both images' content hashes and the matcher's settings and weights), matches only the
             missing ones and adds them; ``--cost`` writes ``shard<shard>.cost.json`` (``pairs_requested,
             pairs_from_cache, pairs_matched, seconds, pair_cache``). The table is the same with or without it.

Features are loaded lazily through a bounded LRU store, so a shard never holds more than ``cache_images``
images' features plus one batch of pairs, never a query x gallery x matcher tensor.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.cli import arg, command, run_stage, stage_parser
from workflow.device import with_device
from workflow.images import load_rgb
from workflow.matcher_keys import extractor_identity, matcher_key
from workflow.pair_cache import PairCache, cache_enabled, pair_cache_key
from workflow.shortlist import read_pairs
from workflow.stage_io import atomic_path, read_tsv, write_json, write_tsv

logger = logging.getLogger(__name__)


def feature_path(cache_root: str | Path, key: str, sha1: str) -> Path:
    return Path(cache_root) / key / sha1[:2] / f"{sha1}.npz"


def extract_dataset(meta: pd.DataFrame, name: str, conf: dict, cache_root: str | Path, block: int = 32) -> pd.DataFrame:
    """Extract (or reuse) the features of every image of ``meta``; returns the manifest table."""
    # OpenCV and the matchers: only the jobs that extract or match load them
    from workflow.matchers import create_matcher, save_features

    key = matcher_key(name, conf, weights=extractor_identity(name, conf))
    files = [feature_path(cache_root, key, sha) for sha in meta["sha1"]]
    todo = [i for i, f in enumerate(files) if not f.is_file()]
    logger.info("%s: %d/%d images already extracted, %d to do", name, len(files) - len(todo), len(files), len(todo))
    counts: dict[int, int] = {}
    if todo:
        matcher = create_matcher(name, **conf)
        start_time = time.perf_counter()
        for start in range(0, len(todo), block):
            rows = todo[start : start + block]
            feats = matcher.extract([load_rgb(meta["abspath"].iloc[i]) for i in rows])
            for i, f in zip(rows, feats):
                save_features(files[i], [meta["image_id"].iloc[i]], [f])
                counts[i] = f.num_keypoints
            done = min(start + block, len(todo))
            rate = done / max(time.perf_counter() - start_time, 1e-9)
            logger.info("%s: extracted %d/%d (%.1f img/s)", name, done, len(todo), rate)
    manifest = pd.DataFrame(
        {
            "image_id": meta["image_id"].to_numpy(),
            "sha1": meta["sha1"].to_numpy(),
            "file": [str(f) for f in files],
            "keypoints": [counts.get(i, -1) for i in range(len(files))],
        }
    )
    return manifest


class FeatureStore(Mapping):
    """``{image_id: LocalFeatures}`` read lazily from per-image files, keeping the last ``capacity`` in memory."""

    def __init__(self, manifest: pd.DataFrame, capacity: int = 4096):
        self._files = dict(zip(manifest["image_id"], manifest["file"]))
        self._cache: OrderedDict = OrderedDict()
        self.capacity = capacity
        self.loads = 0

    def __getitem__(self, image_id):
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        # OpenCV and the matchers: only the jobs that extract or match load them
        from workflow.matchers import load_features

        feats = next(iter(load_features(self._files[image_id]).values()))
        self.loads += 1
        self._cache[image_id] = feats
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return feats

    def __contains__(self, image_id) -> bool:
        return image_id in self._files

    def __iter__(self) -> Iterator:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def shard_sources(pairs: pd.DataFrame, shard: int, n_shards: int) -> np.ndarray:
    """Source images (the ``query`` column) of shard ``shard`` (0-based) of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    sources = np.array(sorted(pairs["query"].unique()), dtype=object)
    return sources[shard::n_shards]


def score_shard_cached(
    pairs: pd.DataFrame,
    make_matcher: Callable[[], object],
    features: Mapping,
    cache: PairCache | None = None,
    sha1: Mapping[str, str] | None = None,
    batch_size: int | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Raw scores of ``pairs``, matching only the pairs the pair ``cache`` lacks (keys: ``sha1[image_id]``).

    ``make_matcher`` is called only when some pair must be matched. The table is the same with or without the
    cache (for batch-invariant matchers, byte for byte); the counts are ``pairs_requested``,
    ``pairs_from_cache`` and ``pairs_matched``.
    """
    # OpenCV and the matchers: only the jobs that extract or match load them
    from workflow.matchers import score_pairs

    pairs = pairs.sort_values(["query", "rank"] if "rank" in pairs else ["query"], kind="stable")
    query = pairs["query"].to_numpy()
    candidate = pairs["candidate"].to_numpy()
    scores = np.zeros(len(pairs), dtype=np.float32)
    hit = np.zeros(len(pairs), dtype=bool)
    if cache is not None and len(pairs):
        if sha1 is None:
            raise ValueError("a pair cache needs the sha1 of every image (the features manifest)")
        missing = sorted({i for i in (*query, *candidate) if i not in sha1})
        if missing:
            raise KeyError(f"no sha1 for {len(missing)} image(s) of the pairs, e.g. {missing[:5]}; extract them first")
        a = np.array([sha1[i] for i in query], dtype=object)
        b = np.array([sha1[i] for i in candidate], dtype=object)
        scores, hit = cache.lookup(a, b)
    todo = np.flatnonzero(~hit)
    logger.info("%d pairs: %d from the pair cache, %d to match", len(pairs), int(hit.sum()), len(todo))
    chunk = 2048  # pairs per progress step; score_pairs batches inside
    start_time = time.perf_counter()
    matcher = make_matcher() if len(todo) else None
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        scores[rows] = score_pairs(matcher, features, list(zip(query[rows], candidate[rows])), batch_size)
        done = min(start + chunk, len(todo))
        logger.info("%d/%d pairs (%.1f pairs/s)", done, len(todo), done / max(time.perf_counter() - start_time, 1e-9))
    if cache is not None and len(todo):
        cache.add(a[todo], b[todo], scores[todo])
    table = pd.DataFrame({"query": query, "candidate": candidate, "score": scores})
    counts = {"pairs_requested": len(pairs), "pairs_from_cache": int(hit.sum()), "pairs_matched": len(todo)}
    return table, counts


def read_shards(paths: list[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def extract(args: argparse.Namespace) -> None:
    """``extract``: local features of every image of one dataset (cached), and their manifest."""
    conf = with_device(args.matcher, json.loads(args.conf), args.device)
    write_tsv(extract_dataset(read_tsv(args.metadata), args.matcher, conf, args.cache), args.out)


def shard(args: argparse.Namespace) -> None:
    """``shard``: match the shortlist pairs of one shard's source images."""
    # OpenCV and the matchers: only the jobs that extract or match load them
    from workflow.matchers import create_matcher

    conf = with_device(args.matcher, json.loads(args.conf), args.device)
    pairs = read_pairs(args.shortlist)
    sources = set(shard_sources(pairs, args.shard, args.n_shards))
    mine = pairs[pairs["query"].isin(sources)]
    logger.info("shard %d/%d: %d source images, %d pairs", args.shard + 1, args.n_shards, len(sources), len(mine))
    manifest = read_tsv(args.features)
    store = FeatureStore(manifest)
    cache = None
    if args.pair_cache and cache_enabled(args.matcher, args.learned_pairs == "true"):
        cache = PairCache(args.pair_cache, args.matcher, pair_cache_key(args.matcher, conf))
    elif args.pair_cache:
        logger.info("%s: learned matcher, its scores are not cached (cache.learned_pairs: false)", args.matcher)
    start = time.perf_counter()
    table, counts = score_shard_cached(
        mine,
        lambda: create_matcher(args.matcher, **conf),
        store,
        cache,
        dict(zip(manifest["image_id"], manifest["sha1"])),
    )
    counts["seconds"] = round(time.perf_counter() - start, 3)
    counts["pair_cache"] = str(cache.folder) if cache is not None else ""
    logger.info("feature files read: %d; %s", store.loads, json.dumps(counts, sort_keys=True))
    with atomic_path(args.out) as tmp:
        table.to_parquet(tmp, index=False)
    if args.cost:
        write_json(counts, args.cost)


def main(argv: list[str] | None = None) -> None:
    commands = {
        "extract": command(None, "metadata cache out"),
        "shard": command(None, "shortlist", arg("--features", required=True, help="manifest written by 'extract'"),
                         arg("--shard", type=int, required=True, help="0-based shard index"),
                         arg("--n-shards", type=int, required=True), "out",
                         arg("--pair-cache", default="", help="root of the pair-level score cache; empty: no cache"),
                         arg("--learned-pairs", type=str.lower, choices=["true", "false"], default="false",
                             help="cache the scores of learned (batch-dependent) matchers too"),
                         arg("--cost", help="JSON: pairs requested, served from the pair cache, matched; seconds")),
    }  # fmt: skip
    parser = stage_parser(
        __doc__, arg("--matcher", required=True),
        arg("--conf", required=False, default="{}", help="JSON matcher options"),
        arg("--device", help="for learned matchers: auto, cpu or cuda"), "threads log", commands=commands,
    )  # fmt: skip
    run_stage(parser, argv, {"extract": extract, "shard": shard}, torch_threads=True)


if __name__ == "__main__":
    main()
