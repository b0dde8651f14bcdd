"""Loading the workflow's own torch files safely, and sizing a job's DataLoader workers.

Inputs
    a ``.pt`` file the workflow wrote (a dual-backbone model or its resume checkpoint: dicts, lists, strings,
    numbers and tensors only); a requested worker count and the job's threads.
Outputs
    :func:`safe_load`: the file's content, loaded with ``torch.load(weights_only=True)`` so that no pickled code
    runs; a file that needs more (written by an older version, or not by the workflow) is refused with a
    message naming it and the fix. :func:`workers_for_threads`: at most ``threads - 1`` workers (the training
    process needs the remaining thread), never more than requested. :func:`rng_state` / :func:`set_rng_state`:
    the torch, numpy and Python RNG states as tensors and plain data (a resume checkpoint's ``rng``).
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def safe_load(path: str | Path, map_location: Any = "cpu", what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)``; raises ValueError naming ``path`` when that is not enough."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path}: refusing to load this {what}: it holds more than tensors and plain data ({first}); "
            "it was written by an older version of the workflow or by something else"
        ) from err


def workers_for_threads(requested: int, threads: int | None) -> int:
    """DataLoader workers for a job with ``threads`` threads: ``min(requested, threads - 1)``, at least 0."""
    requested = max(int(requested), 0)
    if not threads:
        return requested
    allowed = max(int(threads) - 1, 0)
    if requested > allowed:
        logger.info("num_workers %d -> %d: the job has %d thread(s), one for the training process",
                    requested, allowed, threads)  # fmt: skip
    return min(requested, allowed)


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python RNG states, as tensors, lists and numbers only (loadable with weights_only)."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states of :func:`rng_state`."""
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
