"""SuperPoint keypoint detector and descriptor, written for this project.

kornia has no SuperPoint extractor, so the network lives here. It follows the published architecture
(DeTone, Malisiewicz and Rabinovich, "SuperPoint: Self-Supervised Interest Point Detection and
Description", CVPR workshops 2018):

* a shared VGG-style encoder: four stages of two 3x3 convolutions with ReLU (64, 64, 128, 128 channels),
  2x2 max pooling after the first three stages, so the encoder output is ``[B x 128 x H/8 x W/8]``;
* a detector head (3x3 conv to 256, 1x1 conv to 65 channels): a softmax over the 65 channels, the
  "no keypoint" dustbin dropped, and the 64 remaining channels rearranged into 8x8 pixel cells
  (pixel shuffle) give a full-resolution score map ``[B x H x W]``, thinned by non-maximum suppression;
* a descriptor head (3x3 conv to 256, 1x1 conv to 256 channels), L2-normalised, sampled bilinearly at
  each keypoint and normalised again.

Parameter names match the official Magic Leap checkpoint ``superpoint_v1.pth`` (``conv1a``, ``conv1b``,
..., ``conv4b``, ``convPa``, ``convPb``, ``convDa``, ``convDb``), so it loads strictly with
:func:`load_superpoint_weights`. Those weights are released by Magic Leap for **non-commercial research
use only** (see the licence in github.com/magicleap/SuperPointPretrainedNetwork); this module ships no
weights. Inputs: grayscale images ``[B x 1 x H x W]`` in ``[0, 1]``. Outputs: per image
``keypoints: [N x 2]`` as ``(x, y)`` pixel coordinates (pixel centres at integers), ``scores: [N]`` and
``descriptors: [N x 256]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workflow.matchers.weights import WEIGHTS

logger = logging.getLogger(__name__)

#: File name of the official checkpoint, as published by Magic Leap and mirrored by cvg/LightGlue.
SUPERPOINT_WEIGHTS_FILE = WEIGHTS["superpoint"].file_names[0]
SUPERPOINT_WEIGHTS_URL = WEIGHTS["superpoint"].url
SUPERPOINT_LICENCE = WEIGHTS["superpoint"].licence


def nms_keep_mask(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Non-maximum suppression on a score map with the usual SuperPoint/SuperGlue refinement.

    A position survives when it is the maximum of its ``(2 * radius + 1)`` window; two further rounds
    add maxima that appear once the neighbourhoods of the kept points are cleared.

    Args:
        scores: ``[B x H x W]`` score map.
        radius: suppression radius in pixels (>= 1).

    Returns:
        ``[B x H x W]`` boolean mask of the kept positions.
    """
    if radius < 1:
        raise ValueError(f"nms radius must be >= 1, got {radius}")

    def window_max(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=2 * radius + 1, stride=1, padding=radius)

    s = scores.unsqueeze(1)
    zeros = torch.zeros_like(s)
    keep = s == window_max(s)
    for _ in range(2):
        suppressed = window_max(keep.to(s.dtype)) > 0
        s_left = torch.where(suppressed, zeros, s)
        new_keep = s_left == window_max(s_left)
        keep = keep | (new_keep & ~suppressed)
    return keep.squeeze(1)


def sample_descriptors(keypoints: torch.Tensor, dense: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Bilinearly sample cell-resolution descriptors at pixel keypoints and L2-normalise them.

    The descriptor of coarse cell ``j`` describes the cell centre at pixel ``cell * j + (cell - 1) / 2``.

    Args:
        keypoints: ``[B x N x 2]`` pixel ``(x, y)``.
        dense: ``[B x D x h x w]`` descriptor map at ``1 / cell`` resolution.
        cell: pixels per descriptor cell.

    Returns:
        ``[B x N x D]`` unit-norm descriptors.
    """
    b, d, h, w = dense.shape
    if keypoints.shape[1] == 0:
        return dense.new_zeros((b, 0, d))
    centre = (cell - 1) / 2.0
    coarse = (keypoints - centre) / cell  # in coarse-cell units, cell centres at integers
    size = torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=keypoints.dtype, device=keypoints.device)
    grid = (coarse / size) * 2 - 1
    sampled = F.grid_sample(
        dense, grid.view(b, 1, -1, 2).to(dense.dtype), mode="bilinear", padding_mode="border", align_corners=True
    )
    return F.normalize(sampled.reshape(b, d, -1), p=2, dim=1).transpose(1, 2)


class SuperPoint(nn.Module):
    """SuperPoint network with keypoint selection.

    Convention: random weights on construction; :meth:`from_weights` / :func:`load_superpoint_weights`
    load the official checkpoint strictly and return the model in eval mode.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        "descriptor_dim": 256,  # output descriptor size (256 in the official weights)
        "nms_radius": 4,  # non-maximum suppression radius in pixels
        "detection_threshold": 0.0005,  # minimum detector score of a keypoint (LightGlue's setting)
        "max_keypoints": -1,  # keep the best N keypoints per image; -1 keeps all above the threshold
        "remove_borders": 4,  # drop keypoints closer than this many pixels to the image border
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__()
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown SuperPoint option(s) {sorted(unknown)}; known: {sorted(self.default_conf)}")
        self.conf = {**self.default_conf, **conf}
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv1a = nn.Conv2d(1, c1, kernel_size=3, stride=1, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, kernel_size=3, stride=1, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, kernel_size=3, stride=1, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, kernel_size=3, stride=1, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, kernel_size=3, stride=1, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, kernel_size=3, stride=1, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, kernel_size=3, stride=1, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, kernel_size=3, stride=1, padding=1)
        self.convPa = nn.Conv2d(c4, c5, kernel_size=3, stride=1, padding=1)
        self.convPb = nn.Conv2d(c5, 65, kernel_size=1, stride=1, padding=0)
        self.convDa = nn.Conv2d(c4, c5, kernel_size=3, stride=1, padding=1)
        self.convDb = nn.Conv2d(c5, self.conf["descriptor_dim"], kernel_size=1, stride=1, padding=0)

    @classmethod
    def from_weights(cls, path: str | Path, **conf: Any) -> SuperPoint:
        """Build the network and load ``path`` (the official ``superpoint_v1.pth`` layout) strictly."""
        model = cls(**conf)
        load_superpoint_weights(model, path)
        return model

    def dense(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run encoder and heads.

        Args:
            images: ``[B x 1 x H x W]`` grayscale in ``[0, 1]``, ``H`` and ``W`` multiples of 8.

        Returns:
            ``scores: [B x H x W]`` keypoint probability per pixel and
            ``descriptors: [B x D x H/8 x W/8]`` unit-norm coarse descriptors.
        """
        x = self.relu(self.conv1a(images))
        x = self.pool(self.relu(self.conv1b(x)))
        x = self.relu(self.conv2a(x))
        x = self.pool(self.relu(self.conv2b(x)))
        x = self.relu(self.conv3a(x))
        x = self.pool(self.relu(self.conv3b(x)))
        x = self.relu(self.conv4a(x))
        x = self.relu(self.conv4b(x))
        logits = self.convPb(self.relu(self.convPa(x)))  # [B x 65 x h x w]
        prob = torch.softmax(logits, dim=1)[:, :-1]  # drop the dustbin: [B x 64 x h x w]
        scores = F.pixel_shuffle(prob, 8).squeeze(1)  # [B x H x W]
        desc = F.normalize(self.convDb(self.relu(self.convDa(x))), p=2, dim=1)
        return scores, desc

    def forward(self, images: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """Detect and describe keypoints.

        Args:
            images: ``[B x 1 x H x W]`` grayscale in ``[0, 1]`` (any ``H``, ``W``: padded to multiples of 8
                at the bottom and right; no keypoint falls in the padding).

        Returns:
            dict with lists of length ``B``: ``keypoints: [N x 2]`` pixel ``(x, y)``, ``scores: [N]`` and
            ``descriptors: [N x D]``, best score first.
        """
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"SuperPoint expects grayscale images [B x 1 x H x W], got {tuple(images.shape)}")
        b, _, h, w = images.shape
        pad_h, pad_w = (-h) % 8, (-w) % 8
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        scores, dense_desc = self.dense(images)
        scores = scores[:, :h, :w]
        scores = torch.where(nms_keep_mask(scores, self.conf["nms_radius"]), scores, torch.zeros_like(scores))
        border = self.conf["remove_borders"]
        if border > 0:
            valid = torch.zeros_like(scores, dtype=torch.bool)
            valid[:, border : h - border, border : w - border] = True
            scores = torch.where(valid, scores, torch.zeros_like(scores))

        keypoints, kp_scores, descriptors = [], [], []
        threshold = self.conf["detection_threshold"]
        k = self.conf["max_keypoints"]
        for i in range(b):
            flat = scores[i].reshape(-1)
            idx = torch.nonzero(flat > threshold, as_tuple=False).squeeze(1)
            s = flat[idx]
            if 0 < k < idx.numel():
                s, top = torch.topk(s, k)
                idx = idx[top]
            else:
                s, order = torch.sort(s, descending=True)
                idx = idx[order]
            xy = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=-1).to(scores.dtype)
            desc = sample_descriptors(xy[None], dense_desc[i : i + 1])[0]
            keypoints.append(xy)
            kp_scores.append(s)
            descriptors.append(desc)
        return {"keypoints": keypoints, "scores": kp_scores, "descriptors": descriptors}


def load_superpoint_weights(model: SuperPoint, path: str | Path) -> SuperPoint:
    """Load an official-layout SuperPoint checkpoint into ``model`` strictly and switch it to eval mode.

    Args:
        model: the network to fill.
        path: a ``superpoint_v1.pth``-style file: a flat state dict with keys ``conv1a.weight``, ...,
            ``convDb.bias`` (a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file's keys or shapes do not match the network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"SuperPoint weights {path} not found; download {SUPERPOINT_WEIGHTS_FILE} from "
            f"{SUPERPOINT_WEIGHTS_URL} ({SUPERPOINT_LICENCE})"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not match the SuperPoint architecture (expected the keys of "
            f"{SUPERPOINT_WEIGHTS_FILE}: conv1a ... convDb): {err}"
        ) from err
    logger.info("loaded SuperPoint weights from %s (%s)", path, SUPERPOINT_LICENCE)
    return model.eval()
