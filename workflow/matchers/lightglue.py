"""LightGlue pipelines: SuperPoint, ALIKED, DISK and SIFT keypoints, each matched by kornia's LightGlue.

The paper runs the four at 512 x 512 px with 256 keypoints per image. Inputs: uint8 RGB images
``[H x W x 3]``. Outputs: :class:`~workflow.matchers.features.LocalFeatures` per image, and per pair the
matches of :func:`lightglue_forward`, batched over padded keypoint sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workflow.matchers.base import register_matcher
from workflow.matchers.features import Correspondences, LocalFeatures, _empty_correspondences
from workflow.matchers.learned import _load_checked, _load_state, _random_init, _TorchMatcher
from workflow.matchers.opencv import _opencv_sift
from workflow.matchers.weights import WEIGHTS

if TYPE_CHECKING:  # torch is imported lazily: the OpenCV matchers never load it
    import torch


def load_lightglue(
    features: str, path: Path | None, filter_threshold: float, network: dict[str, Any] | None = None
) -> torch.nn.Module:
    """kornia ``LightGlue`` for ``features`` with weights from ``path`` (random weights when None).

    Built with ``features=None`` (kornia would otherwise download) and the feature type's configuration (kornia's
    table, or ``network`` for a feature type kornia does not know), pruning and early stopping off; the release
    files' old key names (``self_attn.0``, a ``matcher.`` prefix) are renamed.
    """
    from kornia.feature import LightGlue

    table = network if network is not None else LightGlue.features[features]
    conf = {k: v for k, v in table.items() if k != "weights"}
    conf.update(depth_confidence=-1, width_confidence=-1, filter_threshold=filter_threshold)
    # flash stays True (kornia's default): LightGlue's attention calls torch.backends.cuda.enable_flash_sdp(flash)
    # on construction, so flash=False would switch flash attention off for the whole process.
    model = _random_init(lambda: LightGlue(features=None, **conf))
    if path is not None:
        state = _load_state(path, None)
        # kornia renames old keys only in LightGlue.__init__, for its own downloads, never for a given file
        state = {k[len("matcher.") :] if k.startswith("matcher.") else k: v for k, v in state.items()
                 if not k.startswith("extractor.")}  # fmt: skip  (a file holding both networks: the matcher's)
        for i in range(model.conf.n_layers):
            for block in ("self_attn", "cross_attn"):
                old, new = f"{block}.{i}.", f"transformers.{i}.{block}."
                state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
        _load_checked(model, state, path, optional=("confidence_thresholds",), allow_unexpected=True)
    return model.eval()


def lightglue_forward(
    model: torch.nn.Module,
    kpts0: torch.Tensor,
    kpts1: torch.Tensor,
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    mask0: torch.Tensor,
    mask1: torch.Tensor,
    size0: torch.Tensor,
    size1: torch.Tensor,
    extra0: torch.Tensor | None = None,
    extra1: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched LightGlue over padded keypoint sets, with masks, all layers, no pruning.

    kornia's ``LightGlue.forward`` takes no padding masks (it pads only on its ``torch.compile`` path,
    whose masks broadcast the batch against the heads), so this runs its modules with masks of shape
    ``[B x 1 x M x 1]`` and masks padded rows and columns out of the assignment. Each pair gives the
    matches it gives alone.

    Args:
        kpts0, kpts1: ``[B x M x 2]``, ``[B x N x 2]`` pixel ``(x, y)``.
        desc0, desc1: ``[B x M x D]``, ``[B x N x D]``.
        mask0, mask1: ``[B x M]``, ``[B x N]`` bool, True for real keypoints.
        size0, size1: ``[B x 2]`` image ``(W, H)``.
        extra0, extra1: ``[B x M x 2]`` (scale, orientation) for ``add_scale_ori`` models (SIFT).

    Returns:
        ``matches0: [B x M]`` int64 index into image 1 or -1, ``scores0: [B x M]`` match confidence.
    """
    import torch
    from kornia.feature.lightglue import filter_matches, normalize_keypoints, sigmoid_log_double_softmax

    k0 = normalize_keypoints(kpts0, size0)
    k1 = normalize_keypoints(kpts1, size1)
    if model.conf.add_scale_ori:
        if extra0 is None or extra1 is None:
            raise ValueError("this LightGlue model needs keypoint scales and orientations")
        k0, k1 = torch.cat([k0, extra0], -1), torch.cat([k1, extra1], -1)
    d0, d1 = model.input_proj(desc0), model.input_proj(desc1)
    e0, e1 = model.posenc(k0), model.posenc(k1)
    padded = not (bool(mask0.all()) and bool(mask1.all()))
    am0 = mask0[:, None, :, None] if padded else None
    am1 = mask1[:, None, :, None] if padded else None
    for layer in model.transformers:
        d0, d1 = layer(d0, d1, e0, e1, mask0=am0, mask1=am1)
    head = model.log_assignment[-1]
    md0, md1 = head.final_proj(d0), head.final_proj(d1)
    dim = md0.shape[-1]
    sim = torch.einsum("bmd,bnd->bmn", md0, md1) / dim**0.5
    valid = mask0[:, :, None] & mask1[:, None, :]
    if padded:
        sim = sim.masked_fill(~valid, float("-inf"))
    scores = sigmoid_log_double_softmax(sim, head.matchability(d0), head.matchability(d1))
    if padded:
        scores[:, :-1, :-1] = scores[:, :-1, :-1].masked_fill(~valid, float("-inf"))
    matches0, _, scores0, _ = filter_matches(scores, model.conf.filter_threshold)
    return matches0, scores0


class _LightGlueMatcher(_TorchMatcher):
    """Keypoint extractor + kornia LightGlue, matched in padded batches."""

    lightglue_features: ClassVar[str] = ""  # kornia LightGlue feature type
    lightglue_network: ClassVar[dict[str, Any] | None] = None  # its configuration when kornia has none
    channels: ClassVar[int] = 3  # network input channels (1: grayscale)
    default_conf: ClassVar[dict[str, Any]] = {
        **_TorchMatcher.default_conf,
        "max_keypoints": 256,  # keypoints per image, best first (WildFusion forces 256)
        "filter_threshold": 0.1,  # LightGlue returns mutual matches above this confidence (kornia default)
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        if not isinstance(self.conf["max_keypoints"], int) or self.conf["max_keypoints"] < 1:
            raise ValueError(f"max_keypoints must be a positive int, got {self.conf['max_keypoints']!r}")
        if not 0 <= self.conf["filter_threshold"] < 1:
            raise ValueError(f"filter_threshold must be in [0, 1), got {self.conf['filter_threshold']!r}")
        self.extractor = self._build_extractor()
        if self.extractor is not None:
            self.extractor = self.extractor.to(self.device).eval()
        path = self._lightglue_weights()
        threshold = self.conf["filter_threshold"]
        self.lightglue = load_lightglue(self.lightglue_features, path, threshold, self.lightglue_network)
        self.lightglue = self.lightglue.to(self.device)

    def _lightglue_weights(self) -> Path | None:
        """The LightGlue weights file (None: random weights, when allowed)."""
        return self._weights(f"lightglue-{self.lightglue_features}", "weights")

    def _build_extractor(self) -> torch.nn.Module | None:
        raise NotImplementedError

    def _run_extractor(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``[B x C x H x W]`` in [0, 1] -> per image ``(keypoints [N x 2], scores [N], descriptors [N x D])``."""
        raise NotImplementedError

    def _extract_batch(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        import torch

        prepped = [
            self.preprocess(im, grayscale=self.channels == 1 or self.conf.get("grayscale", False)) for im in images
        ]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prepped):
            groups.setdefault(p.shape, []).append(i)
        out: list[LocalFeatures | None] = [None] * len(images)
        for idx in groups.values():
            batch = self._image_tensor([prepped[i] for i in idx])
            if self.channels == 3 and batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            with torch.inference_mode():
                results = self._run_extractor(batch)
            for i, (kp, sc, de) in zip(idx, results):
                out[i] = LocalFeatures(
                    kp.float().cpu().numpy(),
                    de.float().cpu().numpy(),
                    sc.float().cpu().numpy(),
                    image_size=prepped[i].shape[:2],
                )
        return out  # type: ignore[return-value]

    def _correspondences(self, feats0: list[LocalFeatures], feats1: list[LocalFeatures]) -> list[Correspondences]:
        import torch

        b = len(feats0)
        n0 = [f.num_keypoints for f in feats0]
        n1 = [f.num_keypoints for f in feats1]
        len0, len1 = max(n0, default=0), max(n1, default=0)
        if b == 0 or len0 == 0 or len1 == 0:
            return [_empty_correspondences() for _ in range(b)]
        dim = self.lightglue.conf.input_dim
        for f in (*feats0, *feats1):
            if f.num_keypoints and f.descriptors.shape[1] != dim:
                raise ValueError(f"{self.name}: descriptors of size {f.descriptors.shape[1]}, LightGlue expects {dim}")
        sift = bool(self.lightglue.conf.add_scale_ori)

        def pad(feats: list[LocalFeatures], length: int):
            kp = np.zeros((b, length, 2), np.float32)
            de = np.zeros((b, length, dim), np.float32)
            mask = np.zeros((b, length), bool)
            extra = np.zeros((b, length, 2), np.float32) if sift else None
            size = np.zeros((b, 2), np.float32)
            for k, f in enumerate(feats):
                n = f.num_keypoints
                kp[k, :n], de[k, :n], mask[k, :n] = f.keypoints, f.descriptors, True
                size[k] = (f.image_size[1], f.image_size[0])
                if sift:
                    if f.scales is None or f.oris is None:
                        raise ValueError(f"{self.name}: features lack the keypoint scales/orientations")
                    extra[k, :n, 0], extra[k, :n, 1] = f.scales, f.oris
            to = lambda a: None if a is None else torch.from_numpy(a).to(self.device)  # noqa: E731
            return to(kp), to(de), to(mask), to(size), to(extra)

        kp0, de0, m0, s0, x0 = pad(feats0, len0)
        kp1, de1, m1, s1, x1 = pad(feats1, len1)
        with torch.inference_mode(), self._autocast():
            matches0, scores0 = lightglue_forward(self.lightglue, kp0, kp1, de0, de1, m0, m1, s0, s1, x0, x1)
        matches0 = matches0.cpu().numpy()
        scores0 = scores0.float().cpu().numpy()
        out: list[Correspondences] = []
        for k in range(b):
            i0 = np.flatnonzero(matches0[k, : n0[k]] > -1)
            i1 = matches0[k, i0]
            out.append((feats0[k].keypoints[i0], feats1[k].keypoints[i1], scores0[k, i0].astype(np.float32)))
        return out


@register_matcher("superpoint-lightglue")
class SuperPointLightGlue(_LightGlueMatcher):
    """SuperPoint (this project's network, :mod:`workflow.matchers.superpoint`) + LightGlue, grayscale input.

    Weights: ``superpoint_v1.pth`` (Magic Leap, non-commercial) and LightGlue's superpoint weights.
    """

    lightglue_features = "superpoint"
    channels = 1
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "extractor_weights": None,  # detector weights file; None -> $TORCH_HOME/hub/checkpoints/<file>
        "detection_threshold": 0.0005,  # SuperPoint keypoint score threshold (LightGlue's setting)
        "nms_radius": 4,  # SuperPoint non-maximum suppression radius in pixels
    }

    def _build_extractor(self) -> torch.nn.Module:
        # torch: only when a LightGlue matcher on SuperPoint features is built
        from workflow.matchers.superpoint import SuperPoint, load_superpoint_weights

        model = _random_init(
            lambda: SuperPoint(
                max_keypoints=self.conf["max_keypoints"],
                detection_threshold=self.conf["detection_threshold"],
                nms_radius=self.conf["nms_radius"],
            )
        )
        path = self._weights("superpoint", "extractor_weights")
        return model if path is None else load_superpoint_weights(model, path)

    def _run_extractor(self, images: torch.Tensor):
        out = self.extractor(images)
        return list(zip(out["keypoints"], out["scores"], out["descriptors"]))


@register_matcher("aliked-lightglue")
class ALIKEDLightGlue(_LightGlueMatcher):
    """kornia ALIKED (aliked-n16, RGB) + LightGlue."""

    lightglue_features = "aliked"
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "grayscale": False,  # feed a grayscale copy (replicated to 3 channels) instead of RGB
        "extractor_weights": None,  # detector weights file; None -> $TORCH_HOME/hub/checkpoints/<file>
        "detection_threshold": -1.0,  # <= 0: keep the max_keypoints strongest maxima; > 0: score threshold
        "nms_radius": 2,  # ALIKED non-maximum suppression radius
    }

    def _build_extractor(self) -> torch.nn.Module:
        from kornia.feature import ALIKED

        model = _random_init(
            lambda: ALIKED(
                "aliked-n16",
                max_num_keypoints=self.conf["max_keypoints"],
                detection_threshold=self.conf["detection_threshold"],
                nms_radius=self.conf["nms_radius"],
            )
        )
        path = self._weights("aliked", "extractor_weights")
        if path is not None:
            _load_checked(model, _load_state(path, WEIGHTS["aliked"].nested_key), path, allow_unexpected=True)
        return model

    def _run_extractor(self, images: torch.Tensor):
        return [(f.keypoints, f.keypoint_scores, f.descriptors) for f in self.extractor(images)]


@register_matcher("disk-lightglue")
class DISKLightGlue(_LightGlueMatcher):
    """kornia DISK (depth weights, RGB) + LightGlue."""

    lightglue_features = "disk"
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "grayscale": False,  # feed a grayscale copy (replicated to 3 channels) instead of RGB
        "extractor_weights": None,  # detector weights file; None -> $TORCH_HOME/hub/checkpoints/<file>
        "detection_threshold": 0.0,  # DISK keeps heatmap maxima strictly above this logit
        "nms_window": 5,  # DISK non-maximum suppression window in pixels
    }

    def _build_extractor(self) -> torch.nn.Module:
        from kornia.feature import DISK

        model = _random_init(DISK)
        path = self._weights("disk", "extractor_weights")
        if path is not None:
            _load_checked(model, _load_state(path, WEIGHTS["disk"].nested_key), path)
        return model

    def _run_extractor(self, images: torch.Tensor):
        feats = self.extractor(
            images,
            n=self.conf["max_keypoints"],
            window_size=self.conf["nms_window"],
            score_threshold=self.conf["detection_threshold"],
            pad_if_not_divisible=True,
        )
        out = []
        for f in feats:  # DISK lists keypoints in raster order: put the best first like the others
            order = f.detection_scores.argsort(descending=True)
            out.append((f.keypoints[order], f.detection_scores[order], f.descriptors[order]))
        return out


@register_matcher("sift-lightglue")
class SIFTLightGlue(_LightGlueMatcher):
    """OpenCV SIFT (RootSIFT descriptors, scales and orientations) + LightGlue's ``sift`` weights.

    Keypoint scale and orientation follow cvg/LightGlue's OpenCV SIFT backend (``KeyPoint.size`` and the
    angle in radians). Extraction runs on the CPU with OpenCV; matching on ``device``.
    """

    lightglue_features = "sift"
    channels = 1
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "contrast_threshold": 0.0066667,  # SIFT contrast threshold (COLMAP's, as in cvg/LightGlue)
        "edge_threshold": 10.0,  # SIFT edge threshold
    }

    def _build_extractor(self) -> None:
        return None

    def _extract_batch(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        out = []
        for image in images:
            gray = self.preprocess(image, grayscale=True)
            pts, desc, resp, sizes, angles = _opencv_sift(
                gray, self.conf["max_keypoints"], self.conf["contrast_threshold"], self.conf["edge_threshold"]
            )
            out.append(LocalFeatures(pts, desc, resp, image_size=gray.shape[:2], scales=sizes, oris=angles))
        return out
