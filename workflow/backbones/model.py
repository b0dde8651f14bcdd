"""The :class:`Backbone` module and :func:`create_backbone`, the one way to build a backbone from a config."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from workflow.backbones.registry import (
    BackboneConfigError,
    BackboneSpec,
    resolve_spec,
)
from workflow.backbones.sources import _LOADERS

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A global-embedding network with the spec it was built from: ``x: (B, 3, S, S) -> (B, D)``, un-normalised."""

    def __init__(self, model: nn.Module, spec: BackboneSpec):
        super().__init__()
        self.model = model
        self.spec = spec

    @property
    def embed_dim(self) -> int:
        return int(self.spec.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"backbone {self.spec.name!r} expects x: (B, 3, H, W), got {tuple(x.shape)}")
        return self.model(x)


def _network_dim(net: nn.Module) -> int:
    return int(getattr(net, "head_hidden_size", None) or net.num_features)


def _complete_spec(spec: BackboneSpec, net: nn.Module, data_cfg: Mapping[str, Any]) -> BackboneSpec:
    dim = _network_dim(net)
    if spec.embed_dim is not None and spec.embed_dim != dim:
        raise BackboneConfigError(
            f"backbone {spec.name!r}: the network gives {dim}-d embeddings but embed_dim is {spec.embed_dim}"
        )
    size = spec.input_size
    if size is None:
        _, height, width = data_cfg["input_size"]
        if height != width:
            logger.warning(
                "backbone %r: non-square input %dx%d in its config; using %d", spec.name, height, width, height
            )
        size = int(height)
    return dataclasses.replace(
        spec,
        input_size=size,
        mean=spec.mean or tuple(data_cfg["mean"]),
        std=spec.std or tuple(data_cfg["std"]),
        embed_dim=dim,
    )


def init_seed(spec: BackboneSpec) -> int:
    """The seed of a backbone's random initial weights: a hash of its source, never of the process."""
    key = spec.source.encode()
    return int.from_bytes(hashlib.sha1(key).digest()[:4], "little")


def create_backbone(name_or_cfg: str | Mapping[str, Any] | BackboneSpec, **overrides: Any) -> Backbone:
    """Build a :class:`Backbone` (in eval mode, on the CPU) from a registered name or a configuration mapping.

    ``overrides`` replace spec fields, e.g. ``create_backbone("miewid-msv3", input_size=512)``. Unknown names list
    the known ones; weights that cannot be fetched raise :class:`BackboneWeightsError` saying how to provide them.
    """
    spec = resolve_spec(name_or_cfg, **overrides)
    start = time.perf_counter()
    # Random initial weights (``pretrained: false``, or layers a checkpoint does not hold) come from a seed of the
    # spec's source alone, so that every process builds the same network: embeddings cached by one job must match
    # those computed by another. The caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(spec))
        net, data_cfg = _LOADERS[spec.kind](spec)
    spec = _complete_spec(spec, net, data_cfg)
    backbone = Backbone(net, spec).eval()
    n_params = sum(p.numel() for p in backbone.parameters())
    logger.info(
        "backbone %r from %s (%s): %.1fM parameters, %d-d, input %d, loaded in %.1f s",
        spec.name,
        spec.source,
        "pretrained" if spec.pretrained else "random weights",
        n_params / 1e6,
        spec.embed_dim,
        spec.input_size,
        time.perf_counter() - start,
    )
    return backbone
