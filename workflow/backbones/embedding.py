"""Batched embedding of image files with a :class:`~workflow.backbones.model.Backbone`.

Inputs: image paths and a backbone. Outputs: L2-normalised embeddings ``(N, D)`` float32, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from workflow.backbones.model import Backbone
from workflow.backbones.registry import (
    _INTERPOLATIONS,
    BackboneSpec,
)
from workflow.device import resolve_device
from workflow.images import load_image

logger = logging.getLogger(__name__)


def preprocess(images: Sequence[Image.Image], spec: BackboneSpec) -> torch.Tensor:
    """Resize each image to ``S x S`` (``spec.interpolation``), scale to [0, 1], normalise: ``(B, 3, S, S)`` float32."""
    size = spec.input_size
    if size is None or spec.mean is None or spec.std is None:
        raise ValueError(f"backbone {spec.name!r}: spec is not resolved (input_size/mean/std unset); use model.spec")
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32)
    resample = _INTERPOLATIONS[spec.interpolation]
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            raise TypeError(f"preprocess expects PIL images, item {i} is {type(img).__name__}")
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.asarray(img.resize((size, size), resample), dtype=np.float32)
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return out.sub_(mean).div_(std)


def embed_paths(
    model: Backbone,
    paths: Sequence[str | Path],
    batch_size: int,
    device: str = "cpu",
    progress_every: int = 10,
    num_threads: int | None = None,
) -> np.ndarray:
    """L2-normalised embeddings ``(N, D)`` float32 of the images at ``paths``, in order.

    Images are read with :func:`workflow.images.load_image` and preprocessed per ``model.spec``. The model is
    moved to ``device`` and run in eval mode under ``torch.inference_mode()``; its train/eval mode is restored
    afterwards. Progress (images/s) is logged every ``progress_every`` batches. ``num_threads`` sets
    ``torch.set_num_threads`` when given.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec = model.spec
    n = len(paths)
    out = np.zeros((n, model.embed_dim), dtype=np.float32)
    if n == 0:
        return out
    if num_threads:
        torch.set_num_threads(int(num_threads))
    device = resolve_device(device)
    was_training = model.training
    model.to(device).eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for b, lo in enumerate(range(0, n, batch_size)):
                batch = [load_image(p) for p in paths[lo : lo + batch_size]]
                x = preprocess(batch, spec).to(device, non_blocking=True)
                emb = model(x).float()
                if not torch.isfinite(emb).all():
                    bad = [str(paths[lo + i]) for i in torch.nonzero(~torch.isfinite(emb).all(1)).flatten().tolist()]
                    raise FloatingPointError(f"backbone {spec.name!r} gave non-finite embeddings for {bad}")
                out[lo : lo + len(batch)] = F.normalize(emb, dim=1).cpu().numpy()
                done = lo + len(batch)
                if progress_every and ((b + 1) % progress_every == 0 or done == n):
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    logger.info("%s: embedded %d/%d images (%.1f img/s)", spec.name, done, n, rate)
    finally:
        model.train(was_training)
    return out
