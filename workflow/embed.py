"""Global-embedding stage: one job per dataset and backbone.

Inputs
    ``results/data/<dataset>.tsv`` (validated metadata with the ``sha1`` of each image file).
Outputs
    ``results/embeddings/<dataset>/<backbone>/<key>.npz`` with ``image_id: [N]`` and ``embeddings: [N x D]``
    (float32, L2-normalised rows), in the row order of the metadata table.

Per-image vectors are cached under ``<cache>/<backbone key>/<sha1[:2]>/<sha1>.npy``, keyed by the image's
content hash and a hash of the backbone's configuration and of its weights' identity (workflow/keys.py
weights_identity: file bytes, hub snapshot revision or package version), so adding images to a dataset (or
rerunning after an interruption) embeds only the images not seen before, and replaced weights embed anew.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from workflow.cli import arg, run_stage, stage_parser
from workflow.keys import UNRESOLVED, param_key, weights_identity
from workflow.stage_io import atomic_path, read_tsv

logger = logging.getLogger(__name__)

# Settings that change how fast embeddings are computed but not their values.
_RUNTIME_KEYS = ("batch_size", "device", "threads")


def backbone_key(backbone_cfg: dict, weights: str | None = None) -> str:
    """Short hash of what determines the embedding values: the settings and the weights' identity
    (``weights``, default :func:`workflow.keys.weights_identity` of the configuration)."""
    relevant = {k: v for k, v in sorted(backbone_cfg.items()) if k not in _RUNTIME_KEYS}
    if weights is None:
        weights = weights_identity(relevant)
    return param_key("embed-cache", relevant, weights)


class EmbeddingCache:
    """Per-image embedding files keyed by image content hash (atomic writes, safe to share)."""

    def __init__(self, root: str | Path, key: str):
        self.root = Path(root) / key

    def path(self, sha1: str) -> Path:
        return self.root / sha1[:2] / f"{sha1}.npy"

    def get(self, sha1: str) -> np.ndarray | None:
        path = self.path(sha1)
        if not sha1 or not path.is_file():
            return None
        try:
            return np.load(path)
        except (OSError, ValueError):
            logger.warning("ignoring unreadable cache entry %s", path)
            return None

    def put(self, sha1: str, vector: np.ndarray) -> None:
        with atomic_path(self.path(sha1)) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, vector.astype(np.float32))


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x: [N x D]`` scaled to unit L2 norm."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def save_embeddings(path: str | Path, image_ids, embeddings: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, image_id=np.asarray(image_ids, dtype=str), embeddings=embeddings.astype(np.float32))


def load_embeddings(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image_id [N], embeddings [N x D])`` from a file written by :func:`save_embeddings`."""
    with np.load(path) as data:
        return data["image_id"].astype(object), data["embeddings"]


def embed_dataset(
    paths: list[str], sha1s: list[str], backbone_cfg: dict, cache_root: str | Path, device: str = "auto"
) -> np.ndarray:
    """Embeddings ``[N x D]`` of ``paths``, computing only those missing from the cache."""
    # torch and the backbones: only the embed job loads a model, not the stages that read embeddings
    from workflow.backbones import create_backbone, embed_paths, resolve_device

    weights = weights_identity({k: v for k, v in backbone_cfg.items() if k not in _RUNTIME_KEYS})
    cache = EmbeddingCache(cache_root, backbone_key(backbone_cfg, weights))
    # weights not resolvable before loading (a hub snapshot not cached yet): trust no cached vector
    vectors: list[np.ndarray | None] = [None if weights == UNRESOLVED else cache.get(s) for s in sha1s]
    todo = [i for i, v in enumerate(vectors) if v is None]
    logger.info("%d/%d embeddings cached, %d to compute", len(paths) - len(todo), len(paths), len(todo))
    if todo:
        model = create_backbone(backbone_cfg)
        if weights == UNRESOLVED:  # loading fetched them: now they have an identity
            weights = weights_identity({k: v for k, v in backbone_cfg.items() if k not in _RUNTIME_KEYS})
            cache = EmbeddingCache(cache_root, backbone_key(backbone_cfg, weights))
            if weights == UNRESOLVED:
                logger.warning("the weights of %s have no identity: their embeddings are not cached", backbone_cfg)
        device = resolve_device(device)
        model = model.to(device)
        batch_size = int(backbone_cfg.get("batch_size", 16))
        # Embed in blocks so an interrupted job keeps what it finished.
        block = max(batch_size * 8, 64)
        for start in range(0, len(todo), block):
            rows = todo[start : start + block]
            out = embed_paths(model, [paths[i] for i in rows], batch_size=batch_size, device=device)
            for i, vec in zip(rows, out):
                vectors[i] = vec
                if sha1s[i] and weights != UNRESOLVED:
                    cache.put(sha1s[i], vec)
            logger.info("embedded %d/%d new images", min(start + block, len(todo)), len(todo))
    if not vectors:
        return np.zeros((0, 0), dtype=np.float32)
    return l2_normalise(np.stack(vectors))


def run(args: argparse.Namespace) -> None:
    """Embeddings of every image of one dataset's table."""
    meta = read_tsv(args.metadata)
    emb = embed_dataset(
        meta["abspath"].tolist(), meta["sha1"].tolist(), json.loads(args.backbone), args.cache, args.device
    )
    save_embeddings(args.out, meta["image_id"].to_numpy(), emb)
    logger.info("wrote %s: %s", args.out, emb.shape)


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(
        __doc__, "metadata", arg("--backbone", required=True, help="JSON backbone configuration"),
        "cache device threads out log",
    )  # fmt: skip
    run_stage(parser, argv, run, torch_threads=True)


if __name__ == "__main__":
    main()
