"""Exact top-k inner-product search with faiss, on the job's GPU when it has one.

Inputs
    ``query [Q x D]`` and ``gallery [G x D]`` float32 rows (L2-normalised for cosine), ``k``, and the job's device
    (``cpu``, ``auto``, ``cuda`` or ``cuda:N``, from its ``gpu`` resource: see ``job_device`` in rules/common.smk).
Outputs
    ``(index [Q x k'], similarity [Q x k'])``, best first, ``k' = min(k, G - exclude_self)``.

On a CUDA device the flat index is built with faiss's GPU index (``StandardGpuResources`` +
``GpuIndexFlatIP``) when the installed faiss has GPU support (``faiss-gpu`` in envs/cuda.yaml,
``faiss.get_num_gpus() > 0``); otherwise, and always on ``cpu``, the CPU ``IndexFlatIP``. Both are exact: the
results agree up to float rounding and the order of exact ties.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_GPU_RESOURCES: dict[tuple[int, int], Any] = {}  # one StandardGpuResources per GPU and process (costly to create)


def gpu_available(faiss: Any) -> bool:
    """Whether this faiss build can place an index on a GPU (a CPU-only build has no GPU symbols)."""
    try:
        return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0
    except (AttributeError, RuntimeError):
        return False


def _gpu_number(device: str) -> int | None:
    """The CUDA device number of ``device``, or None for the CPU (``auto`` counts as GPU 0)."""
    if device in ("auto", "cuda"):
        return 0
    if device.startswith("cuda:"):
        return int(device.partition(":")[2])
    return None


def flat_ip_index(dim: int, device: str = "cpu", faiss: Any = None) -> tuple[Any, str]:
    """An exact inner-product index of width ``dim`` and where it lives (``cpu`` or ``cuda:N``)."""
    if faiss is None:
        import faiss
    gpu = _gpu_number(device)
    if gpu is not None and gpu_available(faiss):
        memo = (id(faiss), gpu)
        if memo not in _GPU_RESOURCES:
            _GPU_RESOURCES[memo] = faiss.StandardGpuResources()
        config = faiss.GpuIndexFlatConfig()
        config.device = gpu
        return faiss.GpuIndexFlatIP(_GPU_RESOURCES[memo], dim, config), f"cuda:{gpu}"
    if gpu is not None and device != "auto":
        logger.warning("device %s: this faiss has no GPU support (install faiss-gpu); searching on the CPU", device)
    return faiss.IndexFlatIP(dim), "cpu"


def topk_inner_product(
    query: np.ndarray, gallery: np.ndarray, k: int, exclude_self: bool = False, device: str = "cpu", faiss: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` gallery rows by inner product (see the module docstring).

    With ``exclude_self`` the query rows are the gallery rows themselves and a row never lists itself.
    """
    query = np.ascontiguousarray(query, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    k_eff = min(k, len(gallery) - int(exclude_self))
    if k_eff <= 0 or len(query) == 0:
        return np.zeros((len(query), 0), np.int64), np.zeros((len(query), 0), np.float32)
    index, where = flat_ip_index(gallery.shape[1], device, faiss)
    index.add(gallery)
    sim, idx = index.search(query, k_eff + int(exclude_self))
    logger.debug("faiss search of %d x %d rows on %s", len(query), len(gallery), where)
    if exclude_self:
        keep = idx != np.arange(len(query))[:, None]
        # each row drops its own index (or, if ties hid it, the last column)
        keep[keep.all(axis=1), -1] = False
        idx = idx[keep].reshape(len(query), k_eff)
        sim = sim[keep].reshape(len(query), k_eff)
    return np.asarray(idx, np.int64), np.asarray(sim, np.float32)
