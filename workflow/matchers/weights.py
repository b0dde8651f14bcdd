"""Where the learned matchers' weights come from: file names, download URLs, licences, lookup.

Weights are never downloaded here. ``None`` looks in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
under the file name kornia itself would cache; a missing file raises :class:`WeightsNotFoundError` naming
the file, where to place it and the config option, unless random weights are allowed (tests, timing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


class WeightsNotFoundError(FileNotFoundError):
    """A learned matcher's weights file is missing and random weights were not allowed."""


@dataclass(frozen=True)
class WeightSource:
    """Where a learned network's weights come from and how the file is laid out."""

    file_names: tuple[str, ...]  # names looked for in $TORCH_HOME/hub/checkpoints; the first is canonical
    url: str  # where to download the file by hand
    licence: str  # licence of the weights (not of the code)
    nested_key: str | None = None  # the state dict sits under this key of the checkpoint


_LG_URL = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv/{}_lightglue.pth"
WEIGHTS: dict[str, WeightSource] = {
    "superpoint": WeightSource(
        ("superpoint_v1.pth",),
        "https://github.com/magicleap/SuperPointPretrainedNetwork/raw/master/superpoint_v1.pth",
        "Magic Leap SuperPoint licence: non-commercial research use only",
    ),
    "aliked": WeightSource(
        ("aliked-n16.pth",), "https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-n16.pth", "BSD-3-Clause"
    ),
    "disk": WeightSource(
        ("depth-save.pth",),
        "https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
        "Apache-2.0",
        nested_key="extractor",
    ),
    "loftr": WeightSource(
        ("loftr_outdoor.ckpt",),
        "https://huggingface.co/kornia/loftr/resolve/main/loftr_outdoor.ckpt",
        "Apache-2.0",
        nested_key="state_dict",
    ),
}
for _feature in ("superpoint", "aliked", "disk", "sift"):
    # kornia 0.9 caches LightGlue weights as f"{name}_v0.1_arxiv.pth" with every "." replaced by "-",
    # i.e. without a file extension; the release asset itself is "<feature>_lightglue.pth".
    WEIGHTS[f"lightglue-{_feature}"] = WeightSource(
        (f"{_feature}_lightglue_v0-1_arxiv-pth", f"{_feature}_lightglue.pth"),
        _LG_URL.format(_feature),
        "Apache-2.0 (cvg/LightGlue)",
    )


def hub_checkpoint_dir() -> Path:
    """The torch hub checkpoint folder that kornia and torchvision download into."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(key: str, path: str | Path | None, allow_random: bool, option: str = "weights") -> Path | None:
    """Find the weights file of network ``key`` (a :data:`WEIGHTS` entry).

    Returns:
        The file to load, or None when it is absent and ``allow_random`` (build random weights).

    Raises:
        WeightsNotFoundError: an explicit ``path`` does not exist, or no file was found and random
            weights are not allowed; the message names the file, where to put it and the config option.
    """
    source = WEIGHTS[key]
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{option}={str(path)!r} does not exist; download {source.file_names[0]} from {source.url} "
                f"({source.licence})"
            )
        return path
    folder = hub_checkpoint_dir()
    for name in source.file_names:
        if (folder / name).is_file():
            return folder / name
    if allow_random:
        logger.warning("no %s weights found in %s: using RANDOM weights (allow_random_weights=true)", key, folder)
        return None
    raise WeightsNotFoundError(
        f"no {key} weights: place {source.file_names[0]} (from {source.url}; {source.licence}) at "
        f"{folder / source.file_names[0]}, or set the matcher option {option} to its path. "
        "Random weights (tests and timing only) need allow_random_weights: true."
    )
