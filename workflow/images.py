"""Robust image reading shared by every stage.

Accepts RGB, RGBA, LA, grayscale (8/16/32-bit), palette and EXIF-rotated images and always returns
an ``(H, W, 3)`` uint8 RGB array. A file that cannot be decoded raises :class:`ImageReadError`
naming the file and the problem.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt."""


def _to_uint8_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    elif mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_image(path: str | Path) -> Image.Image:
    """Read ``path`` fully, apply its EXIF orientation and return an 8-bit RGB PIL image."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: image file does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_uint8_rgb(img)
    except Image.DecompressionBombError as err:
        raise ImageReadError(
            f"{path}: image too large to decode ({err}); resize it (a photo of a few megapixels is plenty)"
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: cannot decode image ({err})") from err


def load_rgb(path: str | Path) -> np.ndarray:
    """Read ``path`` as an ``(H, W, 3)`` uint8 RGB array (see :func:`load_image`)."""
    return np.asarray(load_image(path), dtype=np.uint8)


def verify_image(path: str | Path) -> str | None:
    """Return ``None`` if ``path`` decodes, else a one-line description of the problem."""
    try:
        load_image(path)
    except ImageReadError as err:
        return str(err)
    return None
