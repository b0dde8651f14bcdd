"""The demo's individuals: body shape, colours and coat pattern (``spots``, ``stripes``, ``mosaic``).

Inputs: a pattern name and a random generator. Outputs: an identity (a dict of shapes in body units, x along
the body, head at x < 0) that :mod:`workflow.demo.render` draws.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PATTERNS = ("spots", "stripes", "mosaic")


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
