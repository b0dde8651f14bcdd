"""The demo's datasets: their config entries (:class:`DemoDataset`) and who is photographed how often.

Inputs: the ``demo`` config section. Outputs: :class:`DemoDataset` entries, and per dataset a plan
(:func:`plan_dataset`) of which individual each database and query photo shows.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zlib
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from workflow.config_check import schema_defaults
from workflow.demo.shapes import PATTERNS

DISTRIBUTIONS = ("longtail", "sparse", "medium")
SECTION_KEYS = ("root", "seed", "image_size", "datasets")
NEW_FRACTION = 1 / 3  # share of each dataset's query photos that show new individuals
DOMINANT_SHARE = 0.28  # longtail: gallery share of the most photographed individual
SPARSE_MAX_IMAGES = 12  # sparse: most gallery photos of one individual (paper: salamander max 12)

# Purposes in the seed tuple (seed, crc32(name), purpose, index).
_PLAN, _IDENTITY, _PHOTO = 0, 1, 2


@dataclass(frozen=True)
class DemoDataset:
    """One synthetic species group (one value of the ``dataset`` column).

    ``pattern`` picks body shape, colours and coat pattern: ``spots`` (lynx-like side view), ``stripes``
    (fire-salamander-like top view), ``mosaic`` (sea-turtle-like scales). ``distribution`` picks the shape of
    the gallery: ``longtail``, ``sparse`` or ``medium`` (module docstring). ``date_range = (y0, y1)`` gives
    gallery dates in ``y0 .. y1-1`` and query dates in ``y1``; ``None`` leaves the date column empty.
    """

    name: str
    species: str
    pattern: str
    known_individuals: int
    new_individuals: int
    gallery_images: int
    query_images: int
    distribution: str
    orientations: list[str] = field(default_factory=lambda: ["left", "right"])
    date_range: tuple[int, int] | None = None

    @property
    def gallery_free(self) -> bool:
        """No gallery (known_individuals 0): every query photo shows a new individual (discovery only)."""
        return self.known_individuals == 0

    def _check_gallery_free(self, where: str) -> None:
        if self.known_individuals or self.gallery_images:
            raise ValueError(
                f"{where}: known_individuals must be an integer >= 1 and gallery_images >= known_individuals, or "
                f"both 0 (a dataset without a gallery); got {self.known_individuals} and {self.gallery_images}"
            )
        if self.new_individuals < 1 or self.query_images < self.new_individuals:
            raise ValueError(
                f"{where}: a dataset without a gallery needs new_individuals >= 1 and query_images >= "
                f"new_individuals (each new individual photographed once at least); got {self.new_individuals} "
                f"and {self.query_images}"
            )

    def __post_init__(self) -> None:
        where = f"demo dataset {self.name!r}"
        # YAML/JSON give lists: store orientations as a fresh list and date_range as a tuple
        if isinstance(self.orientations, (list, tuple)):
            object.__setattr__(self, "orientations", list(self.orientations))
        if isinstance(self.date_range, list):
            object.__setattr__(self, "date_range", tuple(self.date_range))
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"demo dataset name must match [A-Za-z0-9_.-]+ (it names a folder), got {self.name!r}")
        if not isinstance(self.species, str) or not self.species.strip():
            raise ValueError(f"{where}: species must be a non-empty string, got {self.species!r}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"{where}: pattern must be one of {list(PATTERNS)}, got {self.pattern!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"{where}: distribution must be one of {list(DISTRIBUTIONS)}, got {self.distribution!r}")
        for key, low in (("known_individuals", 0), ("new_individuals", 0), ("gallery_images", 0), ("query_images", 1)):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
        if self.known_individuals == 0 or self.gallery_images == 0:
            self._check_gallery_free(where)
            return
        if (
            not isinstance(self.orientations, (list, tuple))
            or not self.orientations
            or not all(isinstance(o, str) and o.strip() for o in self.orientations)
        ):
            raise ValueError(f"{where}: orientations must be a non-empty list of strings, got {self.orientations!r}")
        if self.date_range is not None:
            ok = (
                isinstance(self.date_range, (list, tuple))
                and len(self.date_range) == 2
                and all(isinstance(y, int) and not isinstance(y, bool) for y in self.date_range)
                and 1900 <= self.date_range[0] < self.date_range[1] <= 9999
            )
            if not ok:
                raise ValueError(
                    f"{where}: date_range must be null or [first_year, last_year] with first_year < last_year "
                    f"(gallery dates before the last year, query dates in it), got {self.date_range!r}"
                )
        if self.gallery_images < self.known_individuals:
            raise ValueError(
                f"{where}: gallery_images ({self.gallery_images}) must be >= known_individuals "
                f"({self.known_individuals}): every known individual needs a database photo"
            )
        n_new, n_known = _query_split(self.query_images, self.new_individuals)
        if self.new_individuals and n_new < self.new_individuals:
            raise ValueError(
                f"{where}: query_images ({self.query_images}) too small: about a third of them "
                f"({n_new}) must cover the {self.new_individuals} new individuals at least once each"
            )
        if n_known < 1:
            raise ValueError(f"{where}: query_images ({self.query_images}) leaves no query photo of a known individual")
        try:  # feasibility of the gallery shape does not depend on the random draws
            gallery_counts(self.distribution, self.known_individuals, self.gallery_images, np.random.default_rng(0))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def _query_split(query_images: int, new_individuals: int, gallery_free: bool = False) -> tuple[int, int]:
    """(query photos of new individuals, query photos of known ones); without a gallery every photo is new."""
    if gallery_free:
        return query_images, 0
    if new_individuals == 0:
        return 0, query_images
    n_new = max(new_individuals, round(query_images * NEW_FRACTION))
    return n_new, query_images - n_new


def _demo_section(cfg: dict) -> dict:
    if not isinstance(cfg, dict):
        raise ValueError(f"demo config must be a mapping, got {type(cfg).__name__}")
    section = cfg["demo"] if "demo" in cfg else cfg
    if not isinstance(section, dict):
        raise ValueError(f"demo config: 'demo' must be a mapping, got {type(section).__name__}")
    unknown = sorted(set(section) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(f"demo config: unknown key(s) {unknown}; expected keys {list(SECTION_KEYS)}")
    return section


def demo_datasets_from_config(cfg: dict) -> list[DemoDataset]:
    """Parse ``cfg['datasets']`` (``cfg`` is the ``demo`` section or a whole config holding one).

    Raises ``ValueError`` naming the bad key (unknown, missing or of the wrong value) and its dataset.
    """
    section = _demo_section(cfg)
    entries = section.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"demo config: 'datasets' must be a non-empty list of dataset entries, got {entries!r}")
    names = [f.name for f in fields(DemoDataset)]
    optional = {"date_range"}
    out: list[DemoDataset] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"demo config: datasets[{i}] must be a mapping, got {entry!r}")
        unknown = sorted(set(entry) - set(names))
        if unknown:
            raise ValueError(f"demo config: datasets[{i}] has unknown key(s) {unknown}; expected keys {names}")
        missing = [k for k in names if k not in entry and k not in optional]
        if missing:
            raise ValueError(f"demo config: datasets[{i}] is missing key(s) {missing}")
        try:
            out.append(DemoDataset(**entry))
        except ValueError as err:
            raise ValueError(f"demo config: datasets[{i}]: {err}") from None
    dup = sorted({d.name for d in out if sum(o.name == d.name for o in out) > 1})
    if dup:
        raise ValueError(f"demo config: dataset names must be unique, repeated: {dup}")
    return out


def demo_settings_from_config(cfg: dict) -> tuple[int, int]:
    """``(seed, image_size)`` from the ``demo`` section (defaults: config/schema.yaml)."""
    section = {**schema_defaults("demo"), **_demo_section(cfg)}
    seed, size = section["seed"], section["image_size"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"demo config: seed must be an integer >= 0, got {seed!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ValueError(f"demo config: image_size must be an integer >= 32, got {size!r}")
    return seed, size


# --------------------------------------------------------------------------------------------------
# Who is photographed how often


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` units in proportion to ``weights`` (N,) -> int counts (N,) summing to ``total``."""
    w = np.asarray(weights, dtype=np.float64)
    raw = w / w.sum() * total
    base = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - base), kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base


def _allocate(total: int, weights: np.ndarray, low: int = 1, high: int | None = None) -> np.ndarray:
    """Counts (N,) with ``low <= count <= high`` summing to ``total``, roughly proportional to ``weights``."""
    n = len(weights)
    high = total if high is None else high
    if not (low * n <= total <= high * n):
        raise ValueError(f"cannot split {total} photos over {n} individuals with {low}..{high} each")
    counts = np.full(n, low, dtype=np.int64)
    free = np.ones(n, dtype=bool)
    remaining = total - low * n
    while remaining > 0:
        add = np.minimum(_largest_remainder(remaining, np.where(free, weights, 0.0)), high - counts)
        counts += add
        remaining -= int(add.sum())
        free &= counts < high
    return counts


def gallery_counts(distribution: str, n: int, total: int, rng: np.random.Generator) -> np.ndarray:
    """Gallery photos per known individual: int (n,), each >= 1, summing to ``total``.

    ``longtail``: one individual holds ~28% of the gallery, ~20% of individuals have one photo, the rest
    follow a Zipf-like tail. ``sparse``: more than half the individuals have one photo (median 1), the others
    2..12. ``medium``: log-normal spread, every individual 1+.
    """
    if total < n:
        raise ValueError(f"{distribution}: {total} gallery photos cannot cover {n} individuals")
    if distribution == "longtail":
        if n < 3:
            counts = _allocate(total, np.array([3.0, 1.0, 0.5][:n]), low=1)
        else:
            n_single = max(1, round(0.2 * n))
            n_mid = n - 1 - n_single
            dominant = max(2, round(DOMINANT_SHARE * total))
            rest = total - dominant - n_single
            if rest < n_mid:
                raise ValueError(
                    f"longtail: {total} gallery photos are too few for {n} individuals "
                    f"(one holds {dominant}, {n_single} singletons, {n_mid} others need 1+ each)"
                )
            surplus = max(0, rest - n_mid * max(1, dominant - 1))  # the others stay below the dominant one
            dominant, rest = dominant + surplus, rest - surplus
            if n_mid == 0:
                mid = np.zeros(0, dtype=np.int64)
            else:
                zipf = 1.0 / np.arange(1, n_mid + 1) ** 0.9
                mid = _allocate(rest, zipf, low=min(2, rest // n_mid), high=max(1, dominant - 1))
            counts = np.concatenate([[dominant], mid, np.ones(n_single, dtype=np.int64)])
    elif distribution == "sparse":
        extras = total - n
        n_repeat = min((n - 1) // 2, max(1, math.ceil(0.4 * n)), extras)
        if extras and n_repeat == 0:
            raise ValueError(f"sparse: {n} individual(s) cannot hold {total} photos with a median of 1")
        if extras > n_repeat * (SPARSE_MAX_IMAGES - 1):
            raise ValueError(
                f"sparse: {total} gallery photos are too many for {n} individuals with median 1 and at most "
                f"{SPARSE_MAX_IMAGES} each; use at most {n + n_repeat * (SPARSE_MAX_IMAGES - 1)}"
            )
        repeat = (
            _allocate(extras, 1.0 / np.arange(1, n_repeat + 1) ** 0.8, low=1, high=SPARSE_MAX_IMAGES - 1)
            if n_repeat
            else np.zeros(0, dtype=np.int64)
        )
        counts = np.ones(n, dtype=np.int64)
        counts[:n_repeat] += repeat
    elif distribution == "medium":
        counts = _allocate(total, rng.lognormal(0.0, 0.75, n), low=1)
    else:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of {list(DISTRIBUTIONS)}")
    return counts[rng.permutation(n)]


def _orientation_weights(orientations: list[str]) -> np.ndarray:
    """The first two listed orientations are the common ones (3x the others)."""
    w = np.array([3.0 if i < 2 else 1.0 for i in range(len(orientations))])
    return w / w.sum()


def _random_dates(rng: np.random.Generator, first: dt.date, last: dt.date, n: int) -> list[str]:
    days = rng.integers(first.toordinal(), last.toordinal() + 1, n)
    return [dt.date.fromordinal(int(d)).isoformat() for d in days]


def plan_dataset(ds: DemoDataset, seed: int) -> pd.DataFrame:
    """Who is in which photo: one row per image, database rows first, each split in random order.

    Returns a table (N rows) with columns ``individual`` (int, 0..known-1 known, then new ones),
    ``identity``, ``split``, ``orientation``, ``date`` (``""`` without a date range) and ``new`` (bool).
    """
    rng = np.random.default_rng([seed, _key(ds.name), _PLAN, 0])
    n_known, n_total = ds.known_individuals, ds.known_individuals + ds.new_individuals
    identities = [f"{ds.name}_{i:03d}" for i in range(n_total)]
    if ds.gallery_free:
        gallery = chosen = known_q = np.zeros(0, dtype=np.int64)
        q_new, q_known = _query_split(ds.query_images, ds.new_individuals, gallery_free=True)
    else:
        gallery = gallery_counts(ds.distribution, n_known, ds.gallery_images, rng)
        q_new, q_known = _query_split(ds.query_images, ds.new_individuals)
        n_kq = min(n_known, q_known)
        p = np.sqrt(gallery) / np.sqrt(gallery).sum()
        chosen = np.sort(rng.choice(n_known, size=n_kq, replace=False, p=p))
        known_q = _allocate(q_known, np.sqrt(gallery[chosen]), low=1)
    new_q = (
        _allocate(q_new, rng.lognormal(0.0, 0.5, ds.new_individuals), low=1)
        if ds.new_individuals
        else np.zeros(0, dtype=np.int64)
    )

    db = np.repeat(np.arange(n_known), gallery)
    query = np.concatenate([np.repeat(chosen, known_q), np.repeat(np.arange(n_known, n_total), new_q)])
    db, query = db[rng.permutation(len(db))], query[rng.permutation(len(query))]
    individual = np.concatenate([db, query]).astype(np.int64)
    split = ["database"] * len(db) + ["query"] * len(query)
    orientation = rng.choice(ds.orientations, size=len(individual), p=_orientation_weights(ds.orientations))
    if ds.date_range is None:
        dates = [""] * len(individual)
    else:
        y0, y1 = ds.date_range
        dates = _random_dates(rng, dt.date(y0, 1, 1), dt.date(y1 - 1, 12, 31), len(db)) + _random_dates(
            rng, dt.date(y1, 1, 1), dt.date(y1, 12, 31), len(query)
        )
    return pd.DataFrame(
        {
            "individual": individual,
            "identity": [identities[i] for i in individual],
            "split": split,
            "orientation": [str(o) for o in orientation],
            "date": dates,
            "new": individual >= n_known,
        }
    )


def _key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))
