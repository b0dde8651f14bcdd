"""The local MiewID embedding network (EfficientNetV2-M + GeM + BatchNorm1d), named for its checkpoints."""

from __future__ import annotations

import timm
import timm.data
import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent: ``(B, C, H, W) -> (B, C, 1, 1)``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), (x.size(-2), x.size(-1))).pow(1.0 / self.p)


class MiewIdEmbedder(nn.Module):
    """MiewID's embedding network: EfficientNetV2-M features -> GeM -> flatten -> BatchNorm1d, ``(B, 2152)``.

    Parameter names follow the upstream MiewIdNet (``backbone.*``, ``pooling.p``, ``bn.*``) so its checkpoints
    load strictly; the training head (``final.*``) is not part of the embedder.
    """

    num_features = 2152
    # Checkpoints that keep GeM inside the timm model (as its global_pool) name its exponent differently.
    checkpoint_key_aliases = {"backbone.global_pool.p": "pooling.p"}

    def __init__(self) -> None:
        super().__init__()
        self.backbone = timm.create_model("efficientnetv2_rw_m", pretrained=False, num_classes=0, global_pool="")
        self.pooling = GeM(p=3.0, eps=1e-6)
        self.bn = nn.BatchNorm1d(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_features(x)
        return self.bn(self.pooling(features).flatten(1))
