"""The common base of the learned matchers (kornia + torch, imported on construction) and weight loading.

Inputs: a weights file found by :func:`workflow.matchers.weights.resolve_weights` (or none: random weights).
Outputs: networks on the configured device, loaded strictly except for derived buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workflow.matchers.base import LocalMatcher
from workflow.matchers.weights import resolve_weights

if TYPE_CHECKING:  # torch is imported lazily: the OpenCV matchers never load it
    import torch

logger = logging.getLogger(__name__)


class _TorchMatcher(LocalMatcher):
    learned = True
    default_conf: ClassVar[dict[str, Any]] = {
        **LocalMatcher.default_conf,
        "weights": None,  # matcher weights file; None -> $TORCH_HOME/hub/checkpoints/<file> (see WEIGHTS)
        "allow_random_weights": False,  # random weights when no file is found: tests and timing ONLY
        "device": "cpu",  # torch device: "cpu", "cuda", "cuda:1", ...
        "mixed_precision": False,  # autocast the matching network: float16 on CUDA, bfloat16 on CPU
    }

    def __init__(self, **conf: Any) -> None:
        super().__init__(**conf)
        import torch

        self.device = torch.device(self.conf["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.conf['device']!r} but torch sees no CUDA device; use device: cpu")
        self.random_weights: list[str] = []  # networks built with random weights

    def _weights(self, key: str, option: str) -> Path | None:
        path = resolve_weights(key, self.conf[option], self.conf["allow_random_weights"], option)
        if path is None:
            self.random_weights.append(key)
        return path

    def _autocast(self):
        """Autocast for the matching network only; extraction always runs in float32."""
        import torch

        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype, enabled=bool(self.conf["mixed_precision"]))

    def _image_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 ``[B x H x W x 3]`` or ``[B x H x W]`` -> float ``[B x C x H x W]`` in [0, 1] on the device."""
        import torch

        arr = np.stack(images)
        t = torch.from_numpy(arr).to(self.device)
        t = t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]
        return t.float().div_(255.0)


def _random_init(build: Callable[[], Any]) -> Any:
    """Build a module with a fixed seed, leaving the global torch RNG as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _load_state(path: Path, nested_key: str | None) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if nested_key is not None and isinstance(state, dict) and nested_key in state:
        state = state[nested_key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _load_checked(
    module: torch.nn.Module,
    state: Mapping[str, Any],
    path: Path,
    optional: Sequence[str] = (),
    allow_unexpected: bool = False,
) -> None:
    """Load ``state`` strictly, except for the buffers named in ``optional`` (derived, not learned).

    ``allow_unexpected`` tolerates (and logs) extra keys, as kornia does for the ALIKED and LightGlue files.
    """
    result = module.load_state_dict(dict(state), strict=False)
    missing = [k for k in result.missing_keys if k not in optional]
    unexpected = [] if allow_unexpected else result.unexpected_keys
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {type(module).__name__}: missing {missing[:5]} unexpected "
            f"{unexpected[:5]} (of {len(missing)} / {len(unexpected)})"
        )
    if result.unexpected_keys:
        logger.warning(
            "%s: ignored %d unexpected keys, e.g. %s", path, len(result.unexpected_keys), result.unexpected_keys[:3]
        )
    logger.info("loaded %s weights from %s", type(module).__name__, path)
