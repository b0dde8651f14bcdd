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
