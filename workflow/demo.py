"""Synthetic multi-species re-ID dataset in the AnimalCLEF 2025 layout (rule ``demo_data``).

Inputs
    The ``demo`` section of the workflow config (``seed``, ``image_size``, ``datasets``; an optional ``root``
    is ignored here), given as a YAML/JSON file or as an inline JSON string. Each dataset entry describes one
    species group (see :class:`DemoDataset`).
Outputs (under ``--out``)
    ``images/<dataset>/<split>/<image_id>.jpg``: ``image_size x image_size`` RGB JPEGs;
    ``solution.csv``: ``image_id, identity, dataset, new`` for every query image (``new`` is True where the
    individual has no database image; its identity is then its own, never seen in the database);
    ``metadata.csv``: ``image_id, identity, path, date, orientation, species, split, dataset`` (``identity``
    empty on query rows). Both tables are written atomically and last, metadata.csv last of all, so an
    interrupted run never looks finished.

The three shapes mirror Table 1 of the AnimalCLEF 2025 paper: ``longtail`` (lynx: few individuals, many
photos each, a few singletons and one individual with ~28% of the gallery), ``sparse`` (salamander: many
individuals, median one gallery photo) and ``medium`` (sea turtle: in between). About one third of each
dataset's query photos show new individuals. Every individual carries its own pattern (``spots``,
``stripes`` or a scale ``mosaic``) on a species body; every photo has its own viewpoint (consistent with its
``orientation``: ``right`` is the mirror of ``left``), scale, crop, rotation, illumination, blur, occlusion
and cluttered background. Same seed, same bytes: every random draw comes from a generator seeded by
``(seed, crc32(dataset name), purpose, index)``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import re
import shutil
import time
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

from workflow._entry import atomic_path, setup_logging

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
SOLUTION_COLUMNS = ["image_id", "identity", "dataset", "new"]
PATTERNS = ("spots", "stripes", "mosaic")
DISTRIBUTIONS = ("longtail", "sparse", "medium")
SECTION_KEYS = ("root", "seed", "image_size", "datasets")
JPEG_QUALITY = 92
ILLUMINATION = 0.6  # strength of the per-photo lighting changes (0: none)
NEW_FRACTION = 1 / 3  # share of each dataset's query photos that show new individuals
DOMINANT_SHARE = 0.28  # longtail: gallery share of the most photographed individual
SPARSE_MAX_IMAGES = 12  # sparse: most gallery photos of one individual (paper: salamander max 12)
CANVAS_UNITS = (1.25, 0.75)  # canonical canvas (width, height) in body units; body length ~1 unit

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
        for key, low in (("known_individuals", 1), ("new_individuals", 0), ("gallery_images", 1), ("query_images", 1)):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
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


def _query_split(query_images: int, new_individuals: int) -> tuple[int, int]:
    """(query photos of new individuals, query photos of known ones)."""
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
    """``(seed, image_size)`` from the ``demo`` section (defaults 2025 and 224)."""
    section = _demo_section(cfg)
    seed, size = section.get("seed", 2025), section.get("image_size", 224)
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


# --------------------------------------------------------------------------------------------------
# Individuals: body shape, colours and coat pattern in body units (x along the body, head at x < 0)

_BASE = {
    "spots": ((196, 150, 102), 16.0, (58, 40, 28), 10.0),  # tawny coat, dark brown spots
    "stripes": ((30, 27, 25), 10.0, (240, 206, 40), 10.0),  # black skin, yellow-orange marks
    "mosaic": ((112, 74, 44), 22.0, (214, 198, 160), 14.0),  # brown scales, cream seams
}


def _jitter_rgb(rng: np.random.Generator, rgb: tuple[int, int, int], sd: float) -> np.ndarray:
    shared = rng.normal(0.0, sd)
    return np.clip(np.asarray(rgb, dtype=np.float64) + shared + rng.normal(0.0, sd / 2, 3), 0, 255)


def _blob(rng: np.random.Generator, cx: float, cy: float, a: float, b: float, wobble: float, n: int = 72):
    """Closed outline (n, 2) of an ellipse with low-frequency radial jitter."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += rng.normal(0.0, wobble / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([cx + a * r * np.cos(t), cy + b * r * np.sin(t)], axis=1)


def _body(pattern: str, rng: np.random.Generator) -> tuple[list[tuple], list[tuple]]:
    """(body parts, fixed dark marks such as ear tufts) of a new individual.

    Parts: ``("poly", pts (K, 2))``, ``("ellipse", x, y, a, b, angle_deg)``, ``("line", x0, y0, x1, y1, w)``;
    marks carry one more value, their opacity.
    """
    j = lambda s: 1.0 + rng.normal(0.0, s)  # noqa: E731
    parts: list[tuple] = []
    features: list[tuple] = []
    if pattern == "spots":  # lynx, side view, head left
        a, b = 0.34 * j(0.04), 0.15 * j(0.06)
        parts.append(("poly", _blob(rng, 0.08, 0.0, a, b, 0.05)))
        hx, hy, hr = 0.08 - a - 0.07, -0.11 * j(0.1), 0.1 * j(0.06)
        parts.append(("ellipse", 0.08 - a + 0.04, -0.06, 0.1, 0.1, 0))  # neck
        parts.append(("ellipse", hx, hy, hr * 1.05, hr, rng.normal(0, 8)))
        parts.append(("ellipse", hx - 0.75 * hr, hy + 0.3 * hr, 0.055, 0.045, 0))  # muzzle
        features.append(("ellipse", hx - 0.35 * hr, hy - 0.15 * hr, 0.014, 0.01, 0, 1.0))  # eye
        for dx in (-0.45, 0.35):  # ears with black tufts
            ex, top = hx + dx * hr, hy - 1.75 * hr * j(0.05)
            parts.append(("poly", np.array([[ex - 0.035, hy - 0.6 * hr], [ex + 0.035, hy - 0.6 * hr], [ex, top]])))
            features.append(("line", ex, top + 0.02, ex + rng.normal(0, 0.01), top - 0.045, 0.012, 1.0))
        for lx in (-0.24, -0.13, 0.15, 0.25):  # legs
            x0 = 0.08 + lx * j(0.05)
            parts.append(("line", x0, 0.05, x0 + rng.normal(0, 0.02), 0.33, 0.06 * j(0.08)))
        tx, ty, ang = 0.08 + a + 0.03, -0.02, 35 + rng.normal(0, 10)  # short tail, drooping, black tip
        parts.append(("ellipse", tx, ty, 0.07 * j(0.1), 0.03, ang))
        rad = np.deg2rad(ang)
        features.append(("ellipse", tx + 0.05 * np.cos(rad), ty + 0.05 * np.sin(rad), 0.025, 0.026, ang, 1.0))
    elif pattern == "stripes":  # salamander, top view, head left
        a, b = 0.30 * j(0.05), 0.12 * j(0.12)
        parts.append(("poly", _blob(rng, 0.0, 0.0, a, b, 0.03)))
        parts.append(("ellipse", -a - 0.06, 0.0, 0.11 * j(0.05), 0.085 * j(0.05), 0))  # head
        tail = np.array([[a - 0.03, -0.055], [0.6, rng.normal(0, 0.03)], [a - 0.03, 0.055]])
        parts.append(("poly", tail))
        for lx, side in ((-0.2, -1), (-0.2, 1), (0.18, -1), (0.18, 1)):  # legs splayed sideways
            x0 = lx * j(0.05)
            parts.append(("line", x0, 0.0, x0 + rng.normal(0.03, 0.03), side * 0.24 * j(0.06), 0.045))
    elif pattern == "mosaic":  # sea turtle, top view, head left
        a, b = 0.33 * j(0.04), 0.22 * j(0.05)
        parts.append(("poly", _blob(rng, 0.08, 0.0, a, b, 0.03)))
        parts.append(("ellipse", 0.08 - a - 0.07, rng.normal(0, 0.01), 0.12 * j(0.05), 0.09 * j(0.05), 0))
        for fx, fy, ang in ((-0.1, -1, -30), (-0.1, 1, 30), (0.32, -1, 35), (0.32, 1, -35)):
            size = 0.16 if fx < 0 else 0.09
            parts.append(("ellipse", fx, fy * (b + 0.02), size * j(0.06), 0.05, ang + rng.normal(0, 6)))
    return parts, features


def _spot_marks(rng: np.random.Generator) -> list[tuple]:
    """Dark spots (some rings, some streaks) scattered over the lynx body."""
    n = int(rng.uniform(55, 95))
    r0 = rng.uniform(0.013, 0.022)
    p_ring, p_streak = rng.uniform(0.0, 0.3), rng.uniform(0.0, 0.2)
    marks: list[tuple] = []
    for _ in range(n):
        x, y = rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.34)
        r = r0 * rng.lognormal(0.0, 0.35)
        u = rng.uniform()
        value = rng.uniform(0.75, 1.0)
        if u < p_streak:
            ang = rng.uniform(0, np.pi)
            dx, dy = 2.2 * r * np.cos(ang), 2.2 * r * np.sin(ang)
            marks.append(("line", x - dx, y - dy, x + dx, y + dy, 0.9 * r, value))
        elif u < p_streak + p_ring:
            marks.append(("ring", x, y, 1.5 * r, 1.5 * r * rng.uniform(0.6, 1.0), rng.uniform(0, 180), 0.5 * r, value))
        else:
            marks.append(("ellipse", x, y, r, r * rng.uniform(0.55, 1.0), rng.uniform(0, 180), value))
    return marks


def _stripe_marks(rng: np.random.Generator) -> list[tuple]:
    """Two wavy dorsolateral bands, cross bars and blotches (fire-salamander-like).

    A per-individual ``morph`` in 0..1 runs from the striped form (wide, unbroken bands) to the spotted
    form (narrow bands broken into pieces, many blotches), as in real fire salamanders.
    """
    marks: list[tuple] = []
    morph, grain = rng.uniform(), rng.uniform(0.5, 1.9)  # striped .. spotted; fine .. coarse marks
    xs = np.linspace(-0.34, 0.56, 46)
    for side in (-1, 1):
        c0, amp = rng.uniform(0.03, 0.055), rng.uniform(0.006, 0.022)
        freq, phase = rng.uniform(2.0, 6.0), rng.uniform(0, 2 * np.pi)
        w0 = rng.uniform(0.025, 0.04) * grain * (1.0 - 0.5 * morph)
        wf, wp = rng.uniform(3.0, 8.0), rng.uniform(0, 2 * np.pi)
        taper = np.clip((0.62 - xs) / 0.35, 0.25, 1.0)
        wander = np.cumsum(rng.normal(0, 0.003, len(xs)))
        ys = side * (c0 + amp * np.sin(2 * np.pi * freq * xs + phase)) * taper + wander
        width = w0 * (0.65 + 0.45 * np.sin(2 * np.pi * wf * xs + wp)) * taper
        keep = np.ones(len(xs) - 1, dtype=bool)
        for _ in range(int(rng.integers(0, 2)) + round(9 * morph)):
            start = int(rng.integers(0, len(xs) - 4))
            keep[start : start + int(rng.integers(1, 5))] = False
        for i in np.flatnonzero(keep):
            marks.append(("line", xs[i], ys[i], xs[i + 1], ys[i + 1], max(width[i], 0.008), 1.0))
    for _ in range(int(rng.integers(0, 4))):  # cross bars
        x = rng.uniform(-0.25, 0.25)
        marks.append(("line", x, -0.045, x + rng.normal(0, 0.03), 0.045, rng.uniform(0.014, 0.026), 1.0))
    for y in (-0.045, 0.045):  # parotoid glands
        a, b = rng.uniform(0.025, 0.05), rng.uniform(0.015, 0.028)
        x, y = -0.33 + rng.normal(0, 0.015), y + rng.normal(0, 0.01)
        marks.append(("ellipse", x, y, a, b, rng.uniform(-30, 30), 1.0))
    for _ in range(int(rng.integers(1, 4)) + round(16 * morph / grain)):  # blotches on head and back
        x, y = rng.uniform(-0.48, 0.35), rng.uniform(-0.1, 0.1)
        a, b = rng.uniform(0.012, 0.03) * grain, rng.uniform(0.01, 0.02) * grain
        marks.append(("ellipse", x, y, a, b, rng.uniform(0, 180), 1.0))
    if rng.uniform() < 0.5:  # yellow upper legs
        for lx, side in ((-0.2, -1), (-0.2, 1), (0.18, -1), (0.18, 1)):
            if rng.uniform() < 0.8:
                marks.append(("ellipse", lx + 0.01, side * 0.15, 0.02 * grain, 0.03, rng.uniform(-20, 20), 1.0))
    return marks


def _mosaic_cells(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scute seeds on a jittered grid: ``seeds`` (M, 2) in body units, ``shades`` (M,) relative brightness
    offsets (cell colour = base x (1 + shade)); cell size and shade contrast vary per individual."""
    spacing = rng.uniform(0.05, 0.095)
    gx, gy = np.meshgrid(np.arange(-0.62, 0.5, spacing), np.arange(-0.32, 0.33, spacing * 0.87))
    gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * spacing / 2
    seeds = np.stack([gx.ravel(), gy.ravel()], axis=1)
    seeds = seeds + rng.uniform(-0.42, 0.42, seeds.shape) * spacing
    contrast = rng.uniform(0.1, 0.32)
    return {"seeds": seeds, "shades": contrast * np.clip(rng.normal(0.0, 2.5, len(seeds)), -5, 5)}


def make_identity(pattern: str, rng: np.random.Generator) -> dict[str, Any]:
    """A new individual of the species drawn by ``pattern``: its body, colours and coat pattern.

    Returns a dict with ``pattern``, ``body`` (list of parts), ``marks`` (list of parts drawn in ``mark_rgb``
    over ``base_rgb``; the last value of a mark is its opacity), ``base_rgb``/``mark_rgb`` (3,) float, ``cells``
    (mosaic only: ``seeds`` (M, 2), ``shades`` (M,)), ``flex`` (amplitude of per-photo body bending, body
    units) and ``scale`` (range of the body length in a photo, in image widths). Body units: the body is
    about one unit long, x runs tail-wards, y downwards, the origin is the canvas centre.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {list(PATTERNS)}, got {pattern!r}")
    base, base_sd, mark, mark_sd = _BASE[pattern]
    body, features = _body(pattern, rng)
    identity: dict[str, Any] = {
        "pattern": pattern,
        "base_rgb": _jitter_rgb(rng, base, base_sd),
        "mark_rgb": _jitter_rgb(rng, mark, mark_sd),
        "body": body,
        "marks": features,
        "cells": None,
        "flex": {"spots": 0.02, "stripes": 0.05, "mosaic": 0.01}[pattern],
        "scale": {"spots": (0.62, 0.95), "stripes": (0.85, 1.1), "mosaic": (0.7, 1.0)}[pattern],
    }
    if pattern == "spots":
        identity["marks"] += _spot_marks(rng)
    elif pattern == "stripes":
        orange = rng.uniform(0.0, 1.0)  # yellow .. orange marks, as in fire salamanders
        identity["mark_rgb"] = np.clip(identity["mark_rgb"] + np.array([0.0, -130.0, -25.0]) * orange, 0, 255)
        brown = rng.uniform() ** 2  # black .. dark brown skin
        identity["base_rgb"] = identity["base_rgb"] + np.array([40.0, 26.0, 10.0]) * brown
        identity["marks"] += _stripe_marks(rng)
    else:
        identity["cells"] = _mosaic_cells(rng)
    return identity


# --------------------------------------------------------------------------------------------------
# Rendering

_SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT


def _px(x: float, y: float, unit: float) -> tuple[int, int]:
    w, h = CANVAS_UNITS
    return round((x + w / 2) * unit * _ONE), round((y + h / 2) * unit * _ONE)


def _draw(canvas: np.ndarray, part: tuple, unit: float, value: float) -> None:
    """Draw one part filled with ``value`` onto the single-channel float canvas (H, W) in place."""
    kind = part[0]
    if kind == "poly":
        pts = np.array([_px(x, y, unit) for x, y in part[1]], dtype=np.int32)
        cv2.fillPoly(canvas, [pts], value, cv2.LINE_AA, _SHIFT)
    elif kind in ("ellipse", "ring"):
        _, x, y, a, b, ang = part[:6]
        thick = -1 if kind == "ellipse" else max(1, round(part[6] * unit))
        axes = (max(1, round(a * unit * _ONE)), max(1, round(b * unit * _ONE)))
        cv2.ellipse(canvas, _px(x, y, unit), axes, float(ang), 0, 360, value, thick, cv2.LINE_AA, _SHIFT)
    elif kind == "line":
        _, x0, y0, x1, y1, w = part[:6]
        cv2.line(canvas, _px(x0, y0, unit), _px(x1, y1, unit), value, max(1, round(w * unit)), cv2.LINE_AA, _SHIFT)
    else:
        raise ValueError(f"unknown part kind {kind!r}")


def canonical_size(image_size: int) -> tuple[int, int]:
    """(width, height) in pixels of the canonical body canvas for photos of ``image_size``."""
    unit = float(image_size)
    return round(CANVAS_UNITS[0] * unit), round(CANVAS_UNITS[1] * unit)


def render_canonical(identity: dict[str, Any], image_size: int) -> np.ndarray:
    """The individual in its canonical pose: float32 (H, W, 4) RGBA, RGB in 0..255, alpha in 0..1."""
    unit = float(image_size)
    width, height = canonical_size(image_size)
    mask = np.zeros((height, width), np.float32)
    for part in identity["body"]:
        _draw(mask, part, unit, 1.0)
    mask = np.clip(mask, 0.0, 1.0)
    base = np.asarray(identity["base_rgb"], np.float32)
    if identity["cells"] is not None:
        seeds, shades = identity["cells"]["seeds"], identity["cells"]["shades"]
        xs = (np.arange(width) + 0.5) / unit - CANVAS_UNITS[0] / 2
        ys = (np.arange(height) + 0.5) / unit - CANVAS_UNITS[1] / 2
        label = np.empty((height, width), np.int64)
        step = max(1, 2_000_000 // (width * len(seeds)))  # nearest seed, a band of rows at a time
        for r in range(0, height, step):
            dx = xs[None, :, None] - seeds[None, None, :, 0]
            dy = ys[r : r + step, None, None] - seeds[None, None, :, 1]
            label[r : r + step] = np.argmin(dx**2 + dy**2, axis=2)
        rgb = base[None, None, :] * (1.0 + shades[label][..., None]).astype(np.float32)
        seam = np.zeros((height, width), np.uint8)
        seam[:, 1:] |= (label[:, 1:] != label[:, :-1]).astype(np.uint8)
        seam[1:, :] |= (label[1:, :] != label[:-1, :]).astype(np.uint8)
        seam = cv2.dilate(seam, np.ones((2, 2), np.uint8)).astype(np.float32)
        seam = cv2.GaussianBlur(seam, (3, 3), 0.6)
    else:
        rgb = np.broadcast_to(base, (height, width, 3)).copy()
        seam = np.zeros((height, width), np.float32)
        for part in identity["marks"]:
            _draw(seam, part, unit, float(part[-1]))
        seam = np.clip(seam, 0.0, 1.0)
    rgb = rgb * (1.0 - seam[..., None]) + np.asarray(identity["mark_rgb"], np.float32) * seam[..., None]
    inside = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    depth = np.clip(inside / max(1.0, 0.06 * unit), 0.0, 1.0)
    rgb = rgb * (0.55 + 0.45 * np.sqrt(depth))[..., None]
    return np.dstack([np.clip(rgb, 0, 255), mask]).astype(np.float32)


@dataclass(frozen=True)
class _View:
    mirror: bool
    sx: tuple[float, float]  # squash along the body
    sy: tuple[float, float]  # squash across the body
    rotation: float  # max |degrees|
    perspective: float  # max |projective coefficient| (body units)


_VIEWS = {
    "left": _View(False, (0.9, 1.05), (0.9, 1.05), 25, 0.25),
    "right": _View(True, (0.9, 1.05), (0.9, 1.05), 25, 0.25),
    "front": _View(False, (0.5, 0.65), (0.95, 1.05), 20, 0.35),
    "back": _View(True, (0.5, 0.65), (0.95, 1.05), 20, 0.35),
    "top": _View(False, (0.9, 1.05), (0.9, 1.05), 35, 0.2),
    "bottom": _View(True, (0.9, 1.05), (0.9, 1.05), 35, 0.2),
    "topleft": _View(False, (0.85, 1.0), (0.65, 0.8), 40, 0.3),
    "topright": _View(True, (0.85, 1.0), (0.65, 0.8), 40, 0.3),
}


def _view(orientation: str, rng: np.random.Generator) -> _View:
    """The viewpoint family of an orientation label; unknown labels get a random, harder one."""
    if orientation in _VIEWS:
        return _VIEWS[orientation]
    return _View(bool(rng.integers(0, 2)), (0.6, 1.05), (0.7, 1.05), 60, 0.4)


def _homography(
    view: _View, rng: np.random.Generator, image_size: int, scale: tuple[float, float] = (0.62, 0.95)
) -> np.ndarray:
    """3 x 3 map from canonical canvas pixels to photo pixels: mirror/squash, tilt, rotate, scale, shift."""
    unit = float(image_size)
    cw, ch = canonical_size(image_size)
    to_body = np.array([[1 / unit, 0, -cw / (2 * unit)], [0, 1 / unit, -ch / (2 * unit)], [0, 0, 1]])
    sx, sy = rng.uniform(*view.sx), rng.uniform(*view.sy)
    squash = np.diag([-sx if view.mirror else sx, sy, 1.0])
    px, py = rng.uniform(-view.perspective, view.perspective, 2)
    tilt = np.array([[1, 0, 0], [0, 1, 0], [px, py, 1.0]])
    ang = np.deg2rad(rng.uniform(-view.rotation, view.rotation))
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1]])
    zoom = rng.uniform(*scale) * image_size
    cx, cy = (0.5 + rng.uniform(-0.1, 0.1, 2)) * image_size
    place = np.array([[zoom, 0, cx], [0, zoom, cy], [0, 0, 1]])
    return place @ rot @ tilt @ squash @ to_body


def _bend(rgba: np.ndarray, amplitude: float, rng: np.random.Generator, unit: float) -> np.ndarray:
    """Bend the body: shift columns up/down along a half sine (float32 (H, W, 4) -> same)."""
    h, w = rgba.shape[:2]
    xs = np.arange(w, dtype=np.float32)
    shift = (rng.uniform(-amplitude, amplitude) * unit) * np.sin(np.pi * xs / w + rng.uniform(-0.5, 0.5))
    map_x = np.broadcast_to(xs, (h, w)).astype(np.float32)
    map_y = (np.arange(h, dtype=np.float32)[:, None] - shift[None, :]).astype(np.float32)
    return cv2.remap(rgba, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


_NATURE = np.array(
    [
        (86, 110, 52),
        (120, 140, 70),
        (60, 80, 40),
        (140, 120, 90),
        (100, 84, 60),
        (160, 150, 130),
        (70, 66, 60),
        (180, 170, 140),
        (40, 52, 34),
        (130, 100, 70),
        (110, 120, 125),
        (200, 190, 165),
    ],
    dtype=np.float32,
)


def _nature_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    c = _NATURE[rng.integers(len(_NATURE))] + rng.normal(0, 12) + rng.normal(0, 6, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered scene: gradient, low-frequency noise, random shapes, some defocus. float32 (S, S, 3)."""
    c0, c1 = np.array(_nature_colour(rng)), np.array(_nature_colour(rng))
    ang = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = np.clip(np.cos(ang) * xs[None, :] + np.sin(ang) * xs[:, None] + 0.5, 0, 1)[..., None]
    img = (c0 * (1 - t) + c1 * t).astype(np.float32)
    coarse = (rng.normal(0, 20, (5, 5, 1)) + rng.normal(0, 5, (5, 5, 3))).astype(np.float32)
    img += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(6, 18))):
        colour = _nature_colour(rng)
        kind = rng.integers(4)
        p = tuple(int(v) for v in rng.integers(-size // 8, size + size // 8, 2))
        if kind == 0:  # leaf / stone
            axes = tuple(int(v) for v in rng.integers(3, size // 5, 2))
            cv2.ellipse(img, p, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 1:  # grass blade / twig
            q = tuple(int(v) for v in rng.integers(-size // 8, size + size // 8, 2))
            cv2.line(img, p, q, colour, int(rng.integers(1, 5)), cv2.LINE_AA)
        elif kind == 2:  # rock
            pts = (np.array(p) + rng.normal(0, size / 10, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(img, [cv2.convexHull(pts)], colour, cv2.LINE_AA)
        else:  # clump of pebbles
            for _ in range(int(rng.integers(3, 9))):
                q = tuple(int(v) for v in np.array(p) + rng.normal(0, size / 16, 2))
                cv2.circle(img, q, int(rng.integers(1, max(2, size // 40))), colour, -1, cv2.LINE_AA)
    sigma = rng.uniform(0.0, 2.5)
    if sigma > 0.4:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img


def _occlude(img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, extent: float) -> None:
    """Draw 1-3 twigs or leaves over the animal (in place)."""
    size = img.shape[0]
    for _ in range(int(rng.integers(1, 4))):
        colour = _nature_colour(rng)
        p = centre + rng.uniform(-0.6, 0.6, 2) * extent
        if rng.uniform() < 0.55:
            ang = rng.uniform(0, np.pi)
            d = np.array([np.cos(ang), np.sin(ang)]) * size
            width = int(rng.integers(2, max(3, size // 22)))
            cv2.line(img, _int_pt(p - d), _int_pt(p + d), colour, width, cv2.LINE_AA)
        else:
            axes = (int(rng.uniform(0.04, 0.1) * size), int(rng.uniform(0.02, 0.06) * size))
            cv2.ellipse(img, _int_pt(p), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)


def _int_pt(p: np.ndarray) -> tuple[int, int]:
    return int(p[0]), int(p[1])


def _illuminate(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Contrast, brightness, colour cast, directional light and gamma; float (S, S, 3) -> same."""
    size = img.shape[0]
    img = (img - 128.0) * (1.0 + strength * rng.uniform(-0.25, 0.25)) + 128.0 + strength * rng.uniform(-25, 25)
    img = img * (1.0 + strength * rng.uniform(-0.12, 0.12, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = np.cos(ang) * xs[None, :] + np.sin(ang) * xs[:, None]
    img *= (1.0 + strength * rng.uniform(0.0, 0.45) * ramp)[..., None]
    gamma = math.exp(strength * rng.uniform(-0.3, 0.3))
    return 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma


def render_individual_image(
    identity_params: dict[str, Any],
    rng: np.random.Generator,
    image_size: int,
    orientation: str = "left",
    canonical: np.ndarray | None = None,
) -> np.ndarray:
    """One photo of an individual: uint8 (image_size, image_size, 3) RGB.

    The viewpoint follows ``orientation`` (``right``/``back``/``bottom``/``topright`` mirror the body;
    ``front``/``back`` foreshorten it; ``topleft``/``topright`` squash it across; unlisted labels get a random
    harder view); scale, crop, rotation, tilt, bending,
    background, occlusion, illumination, blur and noise are drawn from ``rng``. ``canonical`` is
    :func:`render_canonical` of the same individual and size, passed in to save time.
    """
    if canonical is None:
        canonical = render_canonical(identity_params, image_size)
    size = int(image_size)
    rgba = _bend(canonical, identity_params["flex"], rng, float(size))
    view = _view(orientation, rng)
    h = _homography(view, rng, size, identity_params["scale"])
    fg = cv2.warpPerspective(
        rgba, h, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    alpha = fg[..., 3:4]
    img = _background(rng, size) * (1.0 - alpha) + fg[..., :3] * alpha
    if rng.uniform() < 0.6:
        centre = h @ np.array([canonical.shape[1] / 2, canonical.shape[0] / 2, 1.0])
        _occlude(img, rng, centre[:2] / centre[2], 0.35 * size)
    img = _illuminate(img, rng, ILLUMINATION)
    if rng.uniform() < 0.5:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(0.3, 0.9))
    img = img + rng.normal(0.0, rng.uniform(1.0, 4.0), img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return buf.tobytes()


# --------------------------------------------------------------------------------------------------
# The whole dataset


def generate_demo(
    out_dir: str | Path, datasets: list[DemoDataset], seed: int, image_size: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the demo under ``out_dir`` and return ``(metadata (N x 8), solution (Q x 4))``.

    ``image_id`` runs 0..N-1 over the datasets in order (database photos first, then query photos, each
    in random order, so ids reveal nothing). An existing metadata.csv/solution.csv is removed first and
    both are rewritten last; ``images/<dataset>/`` of each generated dataset is replaced.
    """
    if not datasets:
        raise ValueError("generate_demo: no datasets given")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"generate_demo: dataset names must be unique, got {names}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"generate_demo: image_size must be an integer >= 32, got {image_size!r}")
    out = Path(out_dir)
    for name in ("metadata.csv", "solution.csv"):
        (out / name).unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    solution: list[dict[str, Any]] = []
    next_id = 0
    for ds in datasets:
        start = time.perf_counter()
        plan = plan_dataset(ds, seed)
        key = _key(ds.name)
        n_total = ds.known_individuals + ds.new_individuals
        identities = [
            make_identity(ds.pattern, np.random.default_rng([seed, key, _IDENTITY, i])) for i in range(n_total)
        ]
        canonicals: dict[int, np.ndarray] = {}
        shutil.rmtree(out / "images" / ds.name, ignore_errors=True)  # no stale photos of an earlier run
        for split in ("database", "query"):
            (out / "images" / ds.name / split).mkdir(parents=True, exist_ok=True)
        for j, row in enumerate(plan.itertuples(index=False)):
            ind = int(row.individual)
            if ind not in canonicals:
                canonicals[ind] = render_canonical(identities[ind], image_size)
            rgb = render_individual_image(
                identities[ind],
                np.random.default_rng([seed, key, _PHOTO, j]),
                image_size,
                orientation=row.orientation,
                canonical=canonicals[ind],
            )
            image_id = next_id
            next_id += 1
            rel = f"images/{ds.name}/{row.split}/{image_id}.jpg"
            (out / rel).write_bytes(_encode_jpeg(rgb))
            rows.append(
                {
                    "image_id": image_id,
                    "identity": row.identity if row.split == "database" else "",
                    "path": rel,
                    "date": row.date,
                    "orientation": row.orientation,
                    "species": ds.species,
                    "split": row.split,
                    "dataset": ds.name,
                }
            )
            if row.split == "query":
                solution.append(
                    {"image_id": image_id, "identity": row.identity, "dataset": ds.name, "new": bool(row.new)}
                )
        query = plan[plan["split"] == "query"]
        logger.info(
            "%s (%s, %s): %d known + %d new individuals; %d database, %d query photos (%d of new "
            "individuals) in %.1f s",
            ds.name,
            ds.species,
            ds.distribution,
            ds.known_individuals,
            ds.new_individuals,
            int((plan["split"] == "database").sum()),
            len(query),
            int(query["new"].sum()),
            time.perf_counter() - start,
        )
    metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
    solution_df = pd.DataFrame(solution, columns=SOLUTION_COLUMNS)
    with atomic_path(out / "solution.csv") as tmp:
        solution_df.to_csv(tmp, index=False)
    with atomic_path(out / "metadata.csv") as tmp:
        metadata.to_csv(tmp, index=False)
    return metadata, solution_df


def read_config(value: str) -> dict:
    """The ``--config`` argument: an inline JSON object or a YAML/JSON file."""
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config looks like inline JSON but does not parse: {err}") from None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--config {value!r} is neither inline JSON nor an existing file")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping (the demo section or a config with a 'demo' key)")
    return cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", required=True, help="demo section (or whole config): inline JSON or a YAML/JSON file"
    )
    parser.add_argument("--out", required=True, help="output folder (AnimalCLEF 2025 layout)")
    parser.add_argument("--log", help="log file")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    try:
        cfg = read_config(args.config)
        datasets = demo_datasets_from_config(cfg)
        seed, image_size = demo_settings_from_config(cfg)
    except ValueError as err:
        logger.error("%s", err)
        raise SystemExit(1) from None
    logger.info("generating %d demo dataset(s) in %s (seed %d, %d px)", len(datasets), args.out, seed, image_size)
    start = time.perf_counter()
    metadata, solution = generate_demo(args.out, datasets, seed, image_size)
    logger.info(
        "wrote %d images (%d query, %d of new individuals) in %.1f s",
        len(metadata),
        len(solution),
        int(solution["new"].sum()),
        time.perf_counter() - start,
    )


if __name__ == "__main__":
    main()
