"""Synthetic images shared by the tests and the matcher benchmark (not part of the runtime package)."""

from __future__ import annotations

import cv2
import numpy as np


def textured_image(size: int = 96, seed: int = 0) -> np.ndarray:
    """A random textured RGB image ``[size x size x 3]`` uint8 (ellipses and lines on a gradient)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    for c in range(3):
        a, b = rng.uniform(-1, 1, 2)
        img[..., c] = 110 + 60 * (a * xx + b * yy)
    n = max(20, size * size // 300)
    for _ in range(n):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(max(2, size // 40), max(3, size // 8), 2))
        color = tuple(float(v) for v in rng.integers(0, 256, 3))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    for _ in range(n // 3):
        p0 = tuple(int(v) for v in rng.integers(0, size, 2))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.line(img, p0, p1, tuple(float(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 3)))
    img = cv2.GaussianBlur(img, (3, 3), 0.8)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def warp_image(image: np.ndarray, seed: int = 0, strength: float = 0.08) -> np.ndarray:
    """A perspective-warped, slightly re-lit copy of ``image`` (same shape), as a second view."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    dst = src + rng.uniform(-strength, strength, src.shape).astype(np.float32) * np.array([w, h], np.float32)
    warped = cv2.warpPerspective(
        image, cv2.getPerspectiveTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT
    ).astype(np.float32)
    return np.clip(warped * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10), 0, 255).astype(np.uint8)
