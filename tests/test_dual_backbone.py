"""Tests of the dual-backbone ArcFace model (workflow/dual_backbone/) with tiny random-weight timm models."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_image
from PIL import Image

from workflow import NEW_INDIVIDUAL
from workflow.dual_backbone import (
    PAPER_AUGMENT,
    ArcFaceHead,
    DualBackbone,
    GrabCutBackground,
    ImageDataset,
    build_eval_transform,
    build_train_transform,
    make_sampler,
    phase_schedule,
    retrieve,
    set_trainable,
    stratified_split,
    train,
)
from workflow.dual_backbone.cli import main

TINY = [
    {"source": "timm:resnet10t", "pretrained": False, "input_size": 32},
    {"source": "timm:resnet10t", "pretrained": False, "input_size": 40, "mean": [0.5, 0.5, 0.5], "std": [0.5] * 3},
]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return DualBackbone.from_config(TINY)


def test_cardinality():
    model = tiny_model().eval()
    assert model.embed_dim == 512 + 512
    assert model.input_size == 40
    assert [type(n).__name__ for n in model.norms] == ["BatchNorm1d", "BatchNorm1d"]
    with torch.inference_mode():
        out = model(torch.rand(3, 3, 40, 40))
    assert out.shape == (3, 1024)


def test_exception_bad_input():
    with pytest.raises(ValueError, match="expects x"):
        tiny_model()(torch.rand(2, 40, 40))
    with pytest.raises(ValueError, match="list of backbone"):
        DualBackbone.from_config(TINY[0])


def test_arcface_logits_match_hand_computation():
    head = ArcFaceHead(2, 3, s=30.0, m=0.35)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]]))
    x = torch.tensor([[3.0, 4.0], [-1.0, 0.1]])  # row 1: angle 0.6435 to class 0; row 2: nearly opposite class 0
    labels = torch.tensor([0, 0])
    torch.set_grad_enabled(False)
    try:
        logits = head(x, labels).numpy()
        plain = head(x).numpy()
    finally:
        torch.set_grad_enabled(True)
    cos = np.array([[0.6, 0.8, -0.6], [-1 / math.hypot(1, 0.1), 0.1 / math.hypot(1, 0.1), 1 / math.hypot(1, 0.1)]])
    want = 30.0 * cos.copy()
    want[0, 0] = 30.0 * math.cos(math.acos(0.6) + 0.35)  # cos(theta + m) on the target
    assert cos[1, 0] < math.cos(math.pi - 0.35)  # past the threshold: cos - m sin(pi - m)
    want[1, 0] = 30.0 * (cos[1, 0] - 0.35 * math.sin(math.pi - 0.35))
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain, 30.0 * cos, rtol=1e-5, atol=1e-5)  # no labels: s * cos
    easy = ArcFaceHead(2, 3, s=30.0, m=0.35, easy_margin=True)
    easy.load_state_dict(head.state_dict())
    assert easy(x, labels)[1, 0].item() == pytest.approx(30.0 * cos[1, 0], rel=1e-5)  # cos <= 0: no margin


def test_stratified_split_and_sampler():
    ids = np.array(["a"] * 20 + ["b"] * 10 + ["c"])
    tr, va = stratified_split(ids, 0.1, seed=1)
    assert sorted([*tr, *va]) == list(range(31))
    assert sorted(ids[va]) == ["a", "a", "b"]
    sampler = make_sampler([0] * 20 + [1] * 10 + [2])
    w = sampler.weights.numpy()
    np.testing.assert_allclose(w[[0, 20, 30]], [1 / 20, 1 / 10, 1.0])
    assert len(list(sampler)) == 31


def test_phase_schedule():
    plan = phase_schedule({"warmup": 2, "main": 4, "final": 2})
    assert [p.phase for p in plan] == ["warmup"] * 2 + ["main"] * 4 + ["final"] * 2
    assert [p.epoch for p in plan] == list(range(1, 9))
    assert plan[0].lr == 1e-2 and plan[0].trainable == "top"
    assert plan[2].lr == pytest.approx(5e-3) and plan[2].trainable == "all"
    assert all(a.lr > b.lr for a, b in zip(plan[2:6], plan[3:6]))  # cosine annealing
    assert plan[-1].lr == 1e-4
    with pytest.raises(ValueError, match="unknown epochs key"):
        phase_schedule({"epochs": 3})


def test_set_trainable_top_fraction():
    model, head = tiny_model(), ArcFaceHead(1024, 3)
    set_trainable(model, head, "top", 0.25)
    branch = [p.requires_grad for p in model.branches[0].parameters()]
    assert 0 < sum(branch) < len(branch) and branch[-1] and not branch[0]
    assert all(p.requires_grad for p in [*model.norms.parameters(), *head.parameters()])
    set_trainable(model, head, "all")
    assert all(p.requires_grad for p in model.parameters())


def test_transforms(tmp_path):
    img = Image.open(write_image(tmp_path / "a.png", size=(60, 50)))
    for cfg in PAPER_AUGMENT.values():
        out = build_train_transform(cfg, 32)(img, "left")
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    rot = build_eval_transform({"rotate_by_orientation": {"left": 90}}, 16)
    assert not torch.equal(rot(img, "left"), rot(img, "right"))
    drop = build_train_transform({"coarse_dropout": {"p": 1.0, "max_area": 0.1}, "color_jitter": None,
                                  "crop_scale": None}, 40)(Image.new("RGB", (40, 40), "white"), "")  # fmt: skip
    erased = float((drop == 0).all(0).float().mean())
    assert 0 < erased <= 0.1 + 1e-6  # one hole of at most 10% of the area
    assert GrabCutBackground()(img).size == img.size
    with pytest.raises(ValueError, match="unknown augmentation key"):
        build_train_transform({"blur": 1}, 32)
    with pytest.raises(ValueError, match="background"):
        build_train_transform({"background": "sam"}, 32)


def test_retrieve_matches_brute_force():
    rng = np.random.default_rng(0)
    g, q = rng.normal(size=(30, 8)), rng.normal(size=(5, 8))
    idx, conf = retrieve(q, g, k=50)
    assert idx.shape == conf.shape == (5, 30)
    gn, qn = g / np.linalg.norm(g, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    cos = qn @ gn.T
    np.testing.assert_array_equal(idx[:, 0], cos.argmax(1))
    np.testing.assert_allclose(conf[:, 0], (cos.max(1) + 1) / 2, rtol=1e-5)
    assert (np.diff(conf, axis=1) <= 1e-6).all()
    with pytest.raises(ValueError, match="gallery is empty"):
        retrieve(q, np.zeros((0, 8)))


def make_images(tmp_path, n_ids=3, per_id=4):
    paths, labels = [], []
    for i in range(n_ids):
        for j in range(per_id):
            paths.append(str(write_image(tmp_path / "img" / f"{i}_{j}.png", size=(36, 36), seed=i)))
            labels.append(i)
    return paths, labels


EPOCHS = {"warmup": 1, "main": 0, "final": 1}
TRAINING = {"batch_size": 4, "seed": 0}


def run_train(tmp_path, paths, labels, ckpt, stop_after=None):
    model, head = tiny_model(), None
    torch.manual_seed(1)
    head = ArcFaceHead(model.embed_dim, 3, s=30, m=0.35)
    tf = build_train_transform({}, model.input_size)
    ds = ImageDataset(paths[:10], labels[:10], None, tf)
    val = ImageDataset(paths[10:], labels[10:], None, build_eval_transform({}, model.input_size))
    hist = train(model, head, ds, val, labels[:10], checkpoint_dir=ckpt, epochs_cfg=EPOCHS, training_cfg=TRAINING,
                 stop_after=stop_after)  # fmt: skip
    return model, head, hist


def test_train_resumes_from_checkpoint(tmp_path, caplog):
    paths, labels = make_images(tmp_path)
    caplog.set_level(logging.INFO, logger="workflow.dual_backbone")
    full_model, full_head, full_hist = run_train(tmp_path, paths, labels, tmp_path / "full")
    assert full_hist["epoch"].tolist() == [1, 2] and np.isfinite(full_hist["loss"]).all()
    assert "validation accuracy" in caplog.text

    _, _, first = run_train(tmp_path, paths, labels, tmp_path / "cut", stop_after=1)  # "interrupted" after epoch 1
    assert first["epoch"].tolist() == [1] and (tmp_path / "cut" / "last.pt").exists()
    model, head, hist = run_train(tmp_path, paths, labels, tmp_path / "cut")  # a fresh process resumes
    assert "resuming" in caplog.text
    assert hist["epoch"].tolist() == [1, 2]
    np.testing.assert_allclose(hist["loss"], full_hist["loss"], rtol=1e-5)
    for (name, a), b in zip(full_model.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full_head.weight, head.weight)
    with pytest.raises(ValueError, match="another schedule"):
        m = tiny_model()
        train(m, ArcFaceHead(m.embed_dim, 3), ImageDataset(paths, labels, None, build_eval_transform({}, 40)), None,
              labels, checkpoint_dir=tmp_path / "cut", epochs_cfg={"warmup": 3})  # fmt: skip


def test_main_train_and_predict(tmp_path):
    paths, labels = make_images(tmp_path, n_ids=3, per_id=3)
    meta = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(paths))], "identity": [f"id{v}" for v in labels],
                         "abspath": paths, "split": "database", "orientation": "left"})  # fmt: skip
    meta.loc[[0, 4], ["split", "identity"]] = ["query", ""]
    meta.to_csv(tmp_path / "meta.tsv", sep="\t", index=False)
    out = tmp_path / "out"
    backbones = '[{"source": "timm:resnet10t", "pretrained": false, "input_size": 32}]'
    main(["train", "--metadata", str(tmp_path / "meta.tsv"), "--backbones", backbones, "--head", '{"s": 30, "m": 0.35}',
          "--epochs", '{"warmup": 1, "main": 0, "final": 0}', "--training", '{"batch_size": 4}',
          "--augment", '{"rotate_by_orientation": {"left": 90}}', "--device", "cpu",
          "--checkpoint-dir", str(out / "ckpt"), "--model-out", str(out / "model.pt"),
          "--history", str(out / "history.tsv")])  # fmt: skip
    assert len(pd.read_csv(out / "history.tsv", sep="\t")) == 1
    assert not (out / "ckpt" / "last.pt").exists()  # removed once the model is written
    main(["predict", "--metadata", str(tmp_path / "meta.tsv"), "--model", str(out / "model.pt"),
          "--dataset", "demo", "--threshold", "0.5", "--tuning", "{}", "--device", "cpu",
          "--predictions", str(out / "predictions.tsv"), "--threshold-out", str(out / "threshold.json"),
          "--curve", str(out / "curve.tsv"), "--embeddings-out", str(out / "emb.npz")])  # fmt: skip
    preds = pd.read_csv(out / "predictions.tsv", sep="\t", keep_default_na=False)
    assert list(preds.columns) == ["image_id", "identity", "top_identity", "top_score"]
    assert preds["image_id"].tolist() == ["i0", "i4"]
    assert set(preds["top_identity"]) <= {"id0", "id1", "id2"}
    assert ((preds["top_score"] >= 0) & (preds["top_score"] <= 1)).all()
    assert set(preds["identity"]) <= {"id0", "id1", "id2", NEW_INDIVIDUAL}


def test_stratified_split_holds_out_ten_percent_of_small_individuals():
    """Mostly 2-3 images per individual (salamanders, dog faces): validation is still ~10% of the images."""
    rng = np.random.default_rng(0)
    ids = np.concatenate([[f"i{k}"] * n for k, n in enumerate(rng.choice([1, 2, 3], size=400))])
    tr, va = stratified_split(ids, 0.1, seed=3)
    assert len(va) == round(0.1 * len(ids))
    assert sorted([*tr, *va]) == list(range(len(ids)))
    assert set(ids[tr]) == set(ids)  # every individual keeps a training image
    singletons = {i for i in set(ids) if (ids == i).sum() == 1}
    assert not singletons & set(ids[va])
    assert list(stratified_split(ids, 0.1, seed=3)[1]) == list(va)  # deterministic
    assert len(stratified_split(np.array(["a", "a", "b"]), 0.1)[1]) == 1  # at least one when possible
    assert len(stratified_split(np.array(["a", "b"]), 0.1)[1]) == 0  # none possible


def test_grabcut_segments_each_image_once_at_bounded_size(monkeypatch):
    """GrabCut runs on a copy of at most grabcut_max_side and once per image per process (not per epoch)."""
    import cv2

    calls = []
    real = cv2.grabCut

    def counting(img, *args):
        calls.append(img.shape)
        return real(img, *args)

    monkeypatch.setattr(cv2, "grabCut", counting)
    monkeypatch.setattr(GrabCutBackground, "masks", {})
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[100:200, 120:280] = (200, 120, 40)  # an animal-coloured block on a dark background
    arr += np.random.default_rng(0).integers(0, 30, arr.shape, dtype=np.uint8)
    img = Image.fromarray(arr)
    transform = build_train_transform({"background": "grabcut", "grabcut_max_side": 100}, 32)
    for _ in range(3):  # three epochs
        transform(img, "")
    assert calls == [(75, 100, 3)]
    out = np.asarray(GrabCutBackground(max_side=100)(img))
    assert out.shape == arr.shape and len(calls) == 1
    assert (out[5:20, 5:20] == 0).all() and out[140:160, 180:220].any()  # corner removed, centre kept


# ------------------------------------------------------------- safe loading and workers per thread (issue 10)


def test_own_files_load_with_weights_only(tmp_path):
    """model.pt and the resume checkpoint's RNG state hold only tensors and plain data: weights_only=True loads
    them; a file that would run pickled code is refused with its path named."""
    import pickle

    from workflow.dual_backbone import load_model, save_model
    from workflow.safe_files import rng_state, safe_load, set_rng_state

    model = tiny_model()
    head = ArcFaceHead(model.embed_dim, 3, s=30, m=0.35)
    save_model(tmp_path / "model.pt", model, head, ["a", "b", "c"], {"crop_scale": [0.7, 1.0], "hflip": 0.5})
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) >= {"specs", "model_state", "classes"}
    loaded, _, classes, augment = load_model(tmp_path / "model.pt")
    assert classes == ["a", "b", "c"] and augment["hflip"] == 0.5
    torch.save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = (np.random.random(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (np.random.random(), torch.rand(1).item()) == expected

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"model_state": Payload()}, fh, protocol=2)
    with pytest.raises(ValueError, match=r"evil\.pt: refusing to load this dual-backbone model"):
        load_model(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refusing"):
        safe_load(tmp_path / "evil.pt")


@pytest.mark.parametrize(
    ("requested", "threads", "workers"), [(7, 8, 7), (7, 4, 3), (7, 1, 0), (2, None, 2), (0, 8, 0)]
)
def test_dataloader_workers_follow_the_job_threads(requested, threads, workers):
    from workflow.safe_files import workers_for_threads

    assert workers_for_threads(requested, threads) == workers
