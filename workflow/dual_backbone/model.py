"""The dual-backbone network: branches without heads, a BatchNorm per branch, the ArcFace head, model files.

Inputs: backbone configurations (:func:`workflow.backbones.create_backbone`). Outputs: ``[B x (D1 + D2)]``
embeddings, ArcFace logits ``[B x C]``, and the model file (``.pt``) written by :func:`save_model`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workflow.backbones import Backbone, create_backbone
from workflow.safe_files import safe_load
from workflow.stage_io import atomic_path


class DualBackbone(nn.Module):
    """Backbones without heads, a ``BatchNorm1d`` per branch, concatenated: ``x: [B x 3 x H x W] -> [B x sum(D)]``.

    ``x`` holds RGB values in [0, 1] (not normalised): each branch resizes it to its own ``spec.input_size``
    and normalises it with its own ``spec.mean``/``spec.std``, so two backbones with different preprocessing
    share one augmented image. The paper uses two branches; any number >= 1 works.
    """

    def __init__(self, backbones: Sequence[Backbone]):
        super().__init__()
        if len(backbones) < 1:
            raise ValueError("DualBackbone needs at least one backbone, got none")
        self.branches = nn.ModuleList(backbones)
        self.norms = nn.ModuleList(nn.BatchNorm1d(b.embed_dim) for b in backbones)
        for i, b in enumerate(backbones):
            self.register_buffer(f"mean{i}", torch.tensor(b.spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer(f"std{i}", torch.tensor(b.spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    @classmethod
    def from_config(cls, configs: Sequence[str | Mapping[str, Any]]) -> DualBackbone:
        """Build from backbone configurations (registered names or mappings, see :func:`create_backbone`)."""
        if isinstance(configs, str | Mapping) or len(configs) < 1:
            raise ValueError(f"backbones must be a list of backbone configurations, got {configs!r}")
        return cls([create_backbone(c) for c in configs])

    @property
    def embed_dim(self) -> int:
        return sum(b.embed_dim for b in self.branches)

    @property
    def input_size(self) -> int:
        """Largest input side of the branches: the size images are augmented to."""
        return max(int(b.spec.input_size) for b in self.branches)

    def specs(self) -> list[dict[str, Any]]:
        """The branches' resolved specs as plain mappings (rebuild with ``pretrained: false`` + state dict)."""
        return [b.spec.to_config() for b in self.branches]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"DualBackbone expects x: [B x 3 x H x W] in [0, 1], got {tuple(x.shape)}")
        out = []
        for i, (branch, norm) in enumerate(zip(self.branches, self.norms)):
            size = int(branch.spec.input_size)
            xi = x if x.shape[-2:] == (size, size) else F.interpolate(x, (size, size), mode="bilinear")
            xi = (xi - getattr(self, f"mean{i}")) / getattr(self, f"std{i}")
            out.append(norm(branch(xi)))
        return torch.cat(out, dim=1)


class ArcFaceHead(nn.Module):
    """Additive angular margin (ArcFace) logits: ``x: [B x D]``, ``labels: [B]`` -> ``[B x C]``.

    ``cos = normalise(x) @ normalise(W).T``; the target logit becomes ``cos(theta + m)``, all logits are scaled
    by ``s``. ``cos(theta + m)`` is not monotonic past ``theta = pi - m``, so (the usual handling, as in
    insightface) where ``cos <= cos(pi - m)`` the target logit is ``cos - m * sin(pi - m)`` instead; with
    ``easy_margin`` the margin applies only where ``cos > 0``. Without labels the logits are ``s * cos``.
    """

    def __init__(self, in_dim: int, n_classes: int, s: float = 64.0, m: float = 0.5, easy_margin: bool = False):
        super().__init__()
        if n_classes < 1 or in_dim < 1:
            raise ValueError(f"ArcFaceHead needs in_dim >= 1 and n_classes >= 1, got {in_dim}, {n_classes}")
        if not (s > 0 and 0 <= m < math.pi / 2):
            raise ValueError(f"ArcFace needs s > 0 and 0 <= m < pi/2, got s={s}, m={m}")
        self.s, self.m, self.easy_margin = float(s), float(m), bool(easy_margin)
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.th = math.cos(math.pi - m)
        self.mm = math.sin(math.pi - m) * m

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(x)
        if labels is None:
            return self.s * cos
        sin = torch.sqrt((1.0 - cos * cos).clamp(min=0.0))
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)
        phi = torch.where(cos > 0, phi, cos) if self.easy_margin else torch.where(cos > self.th, phi, cos - self.mm)
        onehot = F.one_hot(labels.long(), cos.shape[1]).to(cos.dtype)
        return self.s * (onehot * phi + (1.0 - onehot) * cos)


def save_model(path: str | Path, model: DualBackbone, head: ArcFaceHead, classes: Sequence[str], augment) -> None:
    """Everything :func:`load_model` needs: branch specs, head settings, class names, augmentations, weights."""
    state = {"specs": model.specs(), "head": {"s": head.s, "m": head.m, "easy_margin": head.easy_margin},
             "classes": list(classes), "augment": dict(augment or {}),
             "model_state": model.state_dict(), "head_state": head.state_dict()}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(path: str | Path) -> tuple[DualBackbone, ArcFaceHead, list[str], dict]:
    """Rebuild a model file: branches from their specs with ``pretrained: false``, then the saved weights (strict)."""
    state = safe_load(path, map_location="cpu", what="dual-backbone model (delete it to retrain)")
    model = DualBackbone([create_backbone({**spec, "pretrained": False}) for spec in state["specs"]])
    model.load_state_dict(state["model_state"])
    head = ArcFaceHead(model.embed_dim, len(state["classes"]), **state["head"])
    head.load_state_dict(state["head_state"])
    return model.eval(), head.eval(), list(state["classes"]), dict(state["augment"])
