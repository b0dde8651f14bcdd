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
             leaves nothing that looks finished, and a rerun redoes only unfinished shards.

Features are loaded lazily through a bounded LRU store, so a shard never holds more than ``cache_images``
images' features plus one batch of pairs, never a query x gallery x matcher tensor.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.cli import arg, command, run_stage, stage_parser
from workflow.keys import file_identity, param_key
from workflow.shortlist import read_pairs
from workflow.stage_io import atomic_path, read_tsv, write_tsv

logger = logging.getLogger(__name__)

# Options that change speed or placement but not the features or scores.
_RUNTIME_KEYS = ("batch_size", "extract_batch_size", "device", "mixed_precision")
# Options that only affect matching, not extraction.
_MATCH_ONLY_KEYS = ("confidence_threshold", "score", "ransac_model", "ransac_threshold", "ratio", "mutual",
                    "filter_threshold")  # fmt: skip


# The network whose weights make each learned matcher's features (workflow.matchers.WEIGHTS key, option).
EXTRACTOR_WEIGHTS = {
    "superpoint-lightglue": ("superpoint", "extractor_weights"),
    "aliked-lightglue": ("aliked", "extractor_weights"),
    "disk-lightglue": ("disk", "extractor_weights"),
}


def extractor_identity(name: str, conf: dict) -> str:
    """Identity of the weights a matcher extracts features with (``""`` for a matcher without learned extractor)."""
    if name not in EXTRACTOR_WEIGHTS:
        return ""
    from workflow.matchers import resolve_weights

    key, option = EXTRACTOR_WEIGHTS[name]
    return file_identity(resolve_weights(key, conf.get(option), allow_random=True, option=option))


def matcher_key(name: str, conf: dict, part: str = "extract", weights: str = "") -> str:
    """Short hash of the settings that determine a matcher's features (``part="extract"``) or scores, and of
    the ``weights`` identity (:func:`extractor_identity`) when there are learned weights."""
    drop = set(_RUNTIME_KEYS) | (set(_MATCH_ONLY_KEYS) if part == "extract" else set())
    relevant = {k: v for k, v in sorted(conf.items()) if k not in drop}
    return param_key(name, relevant, *([weights] if weights else []))


def with_device(name: str, conf: dict, device: str) -> dict:
    """Fill a learned matcher's ``device`` option from the workflow's device unless set explicitly."""
    from workflow.matchers import MATCHERS

    if name in MATCHERS and "device" in MATCHERS[name].default_conf and "device" not in conf:
        from workflow.backbones import resolve_device

        conf = {**conf, "device": resolve_device(device)}
    return conf


def feature_path(cache_root: str | Path, key: str, sha1: str) -> Path:
    return Path(cache_root) / key / sha1[:2] / f"{sha1}.npz"


def extract_dataset(meta: pd.DataFrame, name: str, conf: dict, cache_root: str | Path, block: int = 32) -> pd.DataFrame:
    """Extract (or reuse) the features of every image of ``meta``; returns the manifest table."""
    from workflow.images import load_rgb
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


def score_shard(pairs: pd.DataFrame, matcher, features: Mapping, batch_size: int | None = None) -> pd.DataFrame:
    """Raw scores of ``pairs`` (``query, candidate``) -> table ``query, candidate, score``."""
    from workflow.matchers import score_pairs

    pairs = pairs.sort_values(["query", "rank"] if "rank" in pairs else ["query"], kind="stable")
    out = []
    chunk = 2048  # pairs per progress step; score_pairs batches inside
    start_time = time.perf_counter()
    for start in range(0, len(pairs), chunk):
        part = pairs.iloc[start : start + chunk]
        scores = score_pairs(matcher, features, list(zip(part["query"], part["candidate"])), batch_size)
        out.append(pd.DataFrame({"query": part["query"].to_numpy(), "candidate": part["candidate"].to_numpy(),
                                 "score": scores}))  # fmt: skip
        done = min(start + chunk, len(pairs))
        logger.info("%d/%d pairs (%.1f pairs/s)", done, len(pairs), done / max(time.perf_counter() - start_time, 1e-9))
    if not out:
        return pd.DataFrame({"query": [], "candidate": [], "score": np.zeros(0, np.float32)})
    return pd.concat(out, ignore_index=True)


def read_shards(paths: list[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def extract(args: argparse.Namespace) -> None:
    """``extract``: local features of every image of one dataset (cached), and their manifest."""
    conf = with_device(args.matcher, json.loads(args.conf), args.device)
    write_tsv(extract_dataset(read_tsv(args.metadata), args.matcher, conf, args.cache), args.out)


def shard(args: argparse.Namespace) -> None:
    """``shard``: match the shortlist pairs of one shard's source images."""
    from workflow.matchers import create_matcher

    conf = with_device(args.matcher, json.loads(args.conf), args.device)
    pairs = read_pairs(args.shortlist)
    sources = set(shard_sources(pairs, args.shard, args.n_shards))
    mine = pairs[pairs["query"].isin(sources)]
    logger.info("shard %d/%d: %d source images, %d pairs", args.shard + 1, args.n_shards, len(sources), len(mine))
    store = FeatureStore(read_tsv(args.features))
    table = score_shard(mine, create_matcher(args.matcher, **conf), store)
    logger.info("feature files read: %d", store.loads)
    with atomic_path(args.out) as tmp:
        table.to_parquet(tmp, index=False)


def main(argv: list[str] | None = None) -> None:
    commands = {
        "extract": command(None, "metadata cache out"),
        "shard": command(None, "shortlist", arg("--features", required=True, help="manifest written by 'extract'"),
                         arg("--shard", type=int, required=True, help="0-based shard index"),
                         arg("--n-shards", type=int, required=True), "out"),
    }  # fmt: skip
    parser = stage_parser(
        __doc__, arg("--matcher", required=True),
        arg("--conf", required=False, default="{}", help="JSON matcher options"),
        arg("--device", help="for learned matchers: auto, cpu or cuda"), "threads log", commands=commands,
    )  # fmt: skip
    run_stage(parser, argv, {"extract": extract, "shard": shard}, torch_threads=True)


if __name__ == "__main__":
    main()
