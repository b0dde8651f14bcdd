"""Pair-level cache of raw match scores, so that a match shard matches only pairs it has never scored.

Inputs
    The content hashes (``sha1`` of the image bytes, workflow/tables.py) of both images of each pair, and the
    matcher's name, settings and weights identity, which together make the cache key (:func:`pair_cache_key`).
Outputs
    ``<root>/<matcher>/<key>/part-<time>-<host>-<pid>-<random>.parquet``: append-only parts with columns
    ``a, b`` (uint64: the first 64 bits of the sha1 of the first and second image, ordered: a matcher's score need
    not be symmetric, so ``(a, b)`` and ``(b, a)`` are different entries) and ``score`` (float32, the raw score
    exactly as the matcher returned it).

Concurrency: parallel shard jobs (threads, processes, SLURM jobs on several nodes that share only the
filesystem) never write the same file. Each job reads every part at its start (the index), matches the pairs
it did not find and writes its new pairs as ONE new part, written under a temporary name and renamed into place
(atomic on POSIX filesystems), so a reader sees a part whole or not at all and a killed job leaves nothing that
looks finished. When a folder holds more than ``max_parts`` parts, the job that notices merges the parts it read
into one new part and then deletes them: new parts written meanwhile are not touched, a reader that finds a
listed part gone lists the folder again, and two jobs compacting at once only leave duplicate rows (identical
scores, read once).

Exactness: a cached score is the float32 the matcher returned for that ordered pair of image contents, under a
key that covers every setting that changes scores. For matchers that score each pair on its own
(:attr:`~workflow.matchers.LocalMatcher.batch_invariant`: the OpenCV ones) a warm shard is therefore equal,
byte for byte, to a cold one. Learned matchers match padded batches whose floating-point sums depend on which
pairs share a batch, so their scores are cached only when asked for (``cache.learned_pairs``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.keys import param_key
from workflow.matcher_keys import extractor_identity, matcher_key, matching_weights_identity
from workflow.stage_io import atomic_path

logger = logging.getLogger(__name__)

PAIR_CACHE_VERSION = 1
"""Bump when matcher code changes a score without changing any setting: every cached score is then dropped."""

MAX_PARTS = 256
"""Parts per cache folder above which a job compacts the folder."""

COLUMNS = ("a", "b", "score")


def _library_versions(learned: bool) -> list[str]:
    import cv2

    versions = [f"opencv={cv2.__version__}", f"numpy={np.__version__}"]
    if learned:
        import kornia
        import torch

        versions += [f"torch={torch.__version__}", f"kornia={kornia.__version__}"]
    return versions


def pair_cache_key(name: str, conf: dict) -> str:
    """Key of the raw scores of matcher ``name`` with options ``conf`` (``device`` already filled in).

    Covers the scoring and extraction settings (workflow.matcher_keys.matcher_key), the identity of the extractor's and
    the matching network's weights, the versions of the libraries that compute the score, and, for the learned
    matchers, what changes their floating point: the device type, mixed precision and the batch size.
    """
    # OpenCV and the matchers: not loaded by the jobs that only read cached pairs
    from workflow.matchers import MATCHERS

    cls = MATCHERS.get(name)
    if cls is None:
        # OpenCV and the matchers: not loaded by the jobs that only read cached pairs
        from workflow.matchers import available_matchers

        raise ValueError(f"unknown matcher {name!r}; known matchers: {', '.join(available_matchers())}")
    weights = [extractor_identity(name, conf), matching_weights_identity(name, conf)]
    numerics: dict = {}
    if cls.learned:
        full = {**cls.default_conf, **conf}
        numerics = {
            "device": str(full.get("device", "cpu")).split(":")[0],
            "mixed_precision": bool(full.get("mixed_precision")),
            "batch_size": full.get("batch_size"),
        }
    scoring = matcher_key(name, conf, part="match", weights="|".join(w for w in weights if w))
    return param_key("pairs", PAIR_CACHE_VERSION, name, scoring, numerics, _library_versions(cls.learned))


def cache_enabled(name: str, learned_pairs: bool) -> bool:
    """Whether ``name``'s scores go through the pair cache (always for batch-invariant matchers)."""
    # OpenCV and the matchers: not loaded by the jobs that only read cached pairs
    from workflow.matchers import MATCHERS

    cls = MATCHERS.get(name)
    return cls is not None and (cls.batch_invariant or learned_pairs)


def content_keys(sha1s: Sequence[str]) -> np.ndarray:
    """``[P]`` uint64: the first 64 bits of each image's sha1 (hex), the image's key in the cache."""
    try:
        return np.array([int(s[:16], 16) for s in sha1s], dtype=np.uint64)
    except (TypeError, ValueError):
        bad = next(s for s in sha1s if not (isinstance(s, str) and len(s) >= 16 and all(c in HEX for c in s[:16])))
        raise ValueError(f"not a hex content hash: {bad!r} (expected the sha1 column of results/data)") from None


HEX = frozenset("0123456789abcdefABCDEF")


def _read(part: Path, among: np.ndarray | None) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    filters = None if among is None else pc.field("a").isin(pa.array(among, pa.uint64()))
    return pq.read_table(part, columns=list(COLUMNS), filters=filters).to_pandas()


class PairCache:
    """The append-only score store of one matcher key: ``lookup`` pairs, ``add`` the newly matched ones.

    Images are keyed by the first 64 bits of their sha1 (two different images share them with probability
    ~N^2 / 2^65: 3e-10 for 100,000 images), a row costs 20 bytes, and a lookup reads only the rows whose first
    image is among the looked-up ones.
    """

    def __init__(self, root: str | Path, name: str, key: str, max_parts: int = MAX_PARTS):
        self.folder = Path(root) / name / key
        self.max_parts = max_parts

    def parts(self) -> list[Path]:
        """The finished parts, oldest first (temporary files start with a dot and are never listed)."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("part-*.parquet"))

    def _read_all(self, among: np.ndarray | None = None) -> tuple[pd.DataFrame, list[Path]]:
        """Rows of every part (first image in ``among`` if given), oldest part first, and the parts read; a part
        deleted by a concurrent compaction makes it list the folder again."""
        for _attempt in range(20):
            parts = self.parts()
            try:
                frames = [_read(p, among) for p in parts]
            except FileNotFoundError:
                continue
            break
        else:
            raise RuntimeError(f"{self.folder}: parts kept disappearing while reading; is a compaction looping?")
        empty = pd.DataFrame(
            {"a": np.zeros(0, np.uint64), "b": np.zeros(0, np.uint64), "score": np.zeros(0, np.float32)}
        )
        table = pd.concat([empty, *frames], ignore_index=True) if frames else empty
        table = table.astype({"a": np.uint64, "b": np.uint64, "score": np.float32})
        return table.drop_duplicates(["a", "b"], keep="first"), parts

    def lookup(self, a: Sequence[str], b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cached scores of the ordered pairs ``(a[i], b[i])`` of image sha1s (reads the parts: the index).

        Returns:
            ``scores: [P]`` float32 (0 where missing) and ``hit: [P]`` bool.
        """
        ka, kb = content_keys(a), content_keys(b)
        if len(ka) == 0:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        table, parts = self._read_all(np.unique(ka))
        logger.info("pair cache %s: %d parts, %d scored pairs of these images", self.folder, len(parts), len(table))
        index = pd.MultiIndex.from_arrays([table["a"].to_numpy(), table["b"].to_numpy()])
        where = index.get_indexer(pd.MultiIndex.from_arrays([ka, kb])) if len(table) else np.full(len(ka), -1)
        hit = where >= 0
        scores = np.zeros(len(ka), np.float32)
        scores[hit] = table["score"].to_numpy()[where[hit]]
        return scores, hit

    def add(self, a: Sequence[str], b: Sequence[str], scores: np.ndarray) -> Path | None:
        """Write the pairs ``(a[i], b[i]) -> scores[i]`` as one new part (atomically); returns its path."""
        scores = np.asarray(scores, dtype=np.float32)
        if not len(a) == len(b) == len(scores):
            raise ValueError(f"a, b and scores must be aligned, got {len(a)}, {len(b)} and {len(scores)} entries")
        if len(scores) == 0:
            return None
        new = pd.DataFrame({"a": content_keys(a), "b": content_keys(b), "score": scores})
        path = self._write(new.drop_duplicates(["a", "b"], keep="first"))
        if len(self.parts()) > self.max_parts:
            self.compact()
        return path

    def _write(self, frame: pd.DataFrame) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32]
        path = self.folder / f"part-{time.time_ns():020d}-{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
        return path

    def compact(self) -> Path | None:
        """Merge every part into one new part, then delete the parts merged (see the module docstring)."""
        table, parts = self._read_all()
        if len(parts) < 2:
            return None
        merged = self._write(table[list(COLUMNS)])
        for part in parts:
            try:
                part.unlink()
            except FileNotFoundError:
                pass  # another job compacted it first; its merged part holds the same rows
        logger.info("pair cache %s: compacted %d parts into %s", self.folder, len(parts), merged.name)
        return merged
