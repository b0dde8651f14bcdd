"""LoFTR (kornia, outdoor weights): the detector-free matcher of the paper, at 192 x 192 px grayscale.

Inputs: uint8 RGB images ``[H x W x 3]``. Outputs: the preprocessed grayscale image as the stored
feature, and per pair LoFTR's correspondences with integer pixel centres.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from workflow.matchers.base import register_matcher
from workflow.matchers.features import Correspondences, LocalFeatures
from workflow.matchers.learned import _load_checked, _load_state, _random_init, _TorchMatcher
from workflow.matchers.weights import WEIGHTS


@register_matcher("loftr")
class LoFTRMatcher(_TorchMatcher):
    """kornia LoFTR (outdoor weights), detector-free, on 192 x 192 grayscale images.

    ``extract`` only preprocesses (the stored feature is the grayscale image); matching runs the backbone
    once per distinct image of a batch, then the coarse-to-fine transformer on every pair.
    """

    default_conf: ClassVar[dict[str, Any]] = {
        **_TorchMatcher.default_conf,
        "resize": 192,  # LoFTR runs on 192 x 192 px grayscale in the paper
        "coarse_threshold": 0.2,  # LoFTR returns coarse matches above this (kornia default)
        "batch_size": 8,  # pairs per LoFTR batch
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        from kornia.feature import LoFTR
        from kornia.feature.loftr.loftr import default_cfg

        cfg = {**default_cfg, "match_coarse": {**default_cfg["match_coarse"], "thr": self.conf["coarse_threshold"]}}
        model = _random_init(lambda: LoFTR(pretrained=None, config=cfg))
        path = self._weights("loftr", "weights")
        if path is not None:
            state = _load_state(path, WEIGHTS["loftr"].nested_key)
            _load_checked(model, {k.removeprefix("matcher."): v for k, v in state.items()}, path)
        self.loftr = model.to(self.device).eval()

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        gray = self.preprocess(image, grayscale=True)
        empty = np.zeros(0, np.float32)
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 0), np.float32), empty, gray.shape, image=gray)

    def _correspondences(self, feats0: list[LocalFeatures], feats1: list[LocalFeatures]) -> list[Correspondences]:
        import torch

        for f in (*feats0, *feats1):
            if f.image is None:
                raise ValueError("LoFTR features must carry the preprocessed image (use LoFTRMatcher.extract)")
        shapes = {f.image.shape for f in (*feats0, *feats1)}
        if len(shapes) > 1:  # differently sized images (resize=None) cannot share a batch
            return [self._correspondences([a], [b])[0] for a, b in zip(feats0, feats1)]
        unique: dict[int, int] = {}
        images: list[np.ndarray] = []
        for f in (*feats0, *feats1):
            if id(f) not in unique:
                unique[id(f)] = len(images)
                images.append(f.image)
        idx0 = torch.tensor([unique[id(f)] for f in feats0], device=self.device)
        idx1 = torch.tensor([unique[id(f)] for f in feats1], device=self.device)
        with torch.inference_mode():
            backbone = self.loftr.extract_features(self._image_tensor(images))
        with torch.inference_mode(), self._autocast():
            out = self.loftr(
                {
                    "features0": {k: v[idx0] for k, v in backbone.items()},
                    "features1": {k: v[idx1] for k, v in backbone.items()},
                }
            )
        # kornia's LoFTR puts pixel centres at +0.5; shift to integer pixel centres like the other matchers
        kp0 = (out["keypoints0"].float() - 0.5).cpu().numpy()
        kp1 = (out["keypoints1"].float() - 0.5).cpu().numpy()
        conf = out["confidence"].float().cpu().numpy()
        batch = out["batch_indexes"].cpu().numpy()
        return [(kp0[batch == k], kp1[batch == k], conf[batch == k]) for k in range(len(feats0))]
