"""Rendering of one demo photo: the individual on a canvas, seen from its orientation, in a cluttered scene.

Inputs: an identity (:func:`workflow.demo.shapes.make_identity`), a random generator, the image size and
the orientation. Outputs: ``[S x S x 3]`` uint8 RGB photos and their JPEG bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

JPEG_QUALITY = 92
ILLUMINATION = 0.6  # strength of the per-photo lighting changes (0: none)
CANVAS_UNITS = (1.25, 0.75)  # canonical canvas (width, height) in body units; body length ~1 unit

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
