"""Pair-level cache of raw match scores, so that a match shard matches only pairs it has never scored.

Inputs
    The content hashes (``sha1`` of the image bytes, workflow/tables.py) of both images of each pair, and the
    matcher's name, settings and weights identity, which together make the cache key (:func:`pair_cache_key`).
Outputs
    ``<root>/<matcher>/<key>/part-<time>-<host>-<pid>-<random>.parquet``: append-only parts with columns
    ``a, b`` (sha1 of the first and second image, ordered: a matcher's score need not be symmetric, so
    ``(a, b)`` and ``(b, a)`` are different entries) and ``score`` (float32, the raw score exactly as the
    matcher returned it).

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

from workflow._entry import atomic_path
from workflow.keys import file_identity, param_key

logger = logging.getLogger(__name__)

PAIR_CACHE_VERSION = 1
"""Bump when matcher code changes a score without changing any setting: every cached score is then dropped."""

MAX_PARTS = 256
"""Parts per cache folder above which a job compacts the folder."""

COLUMNS = ("a", "b", "score")


def matching_weights_identity(name: str, conf: dict) -> str:
    """Identity of the weights a learned matcher matches with (LightGlue, LoFTR); ``""`` for the OpenCV ones."""
    from workflow.matchers import MATCHERS, resolve_weights

    cls = MATCHERS.get(name)
    if cls is None or not cls.learned:
        return ""
    features = getattr(cls, "lightglue_features", None)
    key = f"lightglue-{features}" if features else name
    return file_identity(resolve_weights(key, conf.get("weights"), allow_random=True))


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

    Covers the scoring and extraction settings (workflow.match.matcher_key), the identity of the extractor's and
    the matching network's weights, the versions of the libraries that compute the score, and, for the learned
    matchers, what changes their floating point: the device type, mixed precision and the batch size.
    """
    from workflow.match import extractor_identity, matcher_key
    from workflow.matchers import MATCHERS

    cls = MATCHERS.get(name)
    if cls is None:
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
    from workflow.matchers import MATCHERS

    cls = MATCHERS.get(name)
    return cls is not None and (cls.batch_invariant or learned_pairs)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype=object),
                         "score": np.zeros(0, np.float32)})  # fmt: skip


class PairCache:
    """The append-only score store of one matcher key: ``lookup`` pairs, ``add`` the newly matched ones."""

    def __init__(self, root: str | Path, name: str, key: str, max_parts: int = MAX_PARTS):
        self.folder = Path(root) / name / key
        self.max_parts = max_parts
        self._parts: list[Path] = []
        self._table: pd.DataFrame | None = None

    def parts(self) -> list[Path]:
        """The finished parts, oldest first (temporary files start with a dot and are never listed)."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("part-*.parquet"))

    def load(self) -> pd.DataFrame:
        """Read every part (the index) once; a part deleted by a concurrent compaction makes it list again."""
        if self._table is not None:
            return self._table
        for _attempt in range(20):
            parts = self.parts()
            try:
                frames = [pd.read_parquet(p, columns=list(COLUMNS)) for p in parts]
            except FileNotFoundError:
                continue
            break
        else:
            raise RuntimeError(f"{self.folder}: parts kept disappearing while reading; is a compaction looping?")
        table = pd.concat([_empty(), *frames], ignore_index=True) if frames else _empty()
        table["score"] = table["score"].astype(np.float32)
        self._parts = parts
        self._table = table.drop_duplicates(["a", "b"], keep="first").set_index(["a", "b"])
        logger.info("pair cache %s: %d parts, %d scored pairs", self.folder, len(parts), len(self._table))
        return self._table

    def lookup(self, a: Sequence[str], b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Cached scores of the ordered pairs ``(a[i], b[i])``.

        Returns:
            ``scores: [P]`` float32 (0 where missing) and ``hit: [P]`` bool.
        """
        table = self.load()
        if len(a) == 0 or table.empty:
            return np.zeros(len(a), np.float32), np.zeros(len(a), bool)
        index = pd.MultiIndex.from_arrays([np.asarray(a, dtype=object), np.asarray(b, dtype=object)])
        found = table["score"].reindex(index)
        hit = found.notna().to_numpy()
        return np.where(hit, found.to_numpy(), 0).astype(np.float32), hit

    def add(self, a: Sequence[str], b: Sequence[str], scores: np.ndarray) -> Path | None:
        """Write the pairs ``(a[i], b[i]) -> scores[i]`` as one new part (atomically); returns its path."""
        scores = np.asarray(scores, dtype=np.float32)
        if not len(a) == len(b) == len(scores):
            raise ValueError(f"a, b and scores must be aligned, got {len(a)}, {len(b)} and {len(scores)} entries")
        if len(scores) == 0:
            return None
        new = pd.DataFrame({"a": np.asarray(a, dtype=object), "b": np.asarray(b, dtype=object), "score": scores})
        path = self._write(new.drop_duplicates(["a", "b"], keep="first"))
        if self._table is not None:
            fresh = new.set_index(["a", "b"])
            fresh = fresh[~fresh.index.isin(self._table.index) & ~fresh.index.duplicated()]
            self._table = pd.concat([self._table, fresh])
            self._parts.append(path)
        if len(self._parts) > self.max_parts:
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
        """Merge the parts this cache has read into one new part, then delete them (see the module docstring)."""
        table = self.load()
        old = list(self._parts)
        if len(old) < 2:
            return None
        merged = self._write(table.reset_index()[list(COLUMNS)])
        for part in old:
            try:
                part.unlink()
            except FileNotFoundError:
                pass  # another job compacted it first; its merged part holds the same rows
        self._parts = [merged]
        logger.info("pair cache %s: compacted %d parts into %s", self.folder, len(old), merged.name)
        return merged
