"""Tests of the frozen-backbone (CPU) mode of the dual-backbone stage (workflow/dual_backbone/frozen.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DOGFACENET, write_image

import workflow.dual_backbone.frozen as fz
import workflow.dual_backbone.heldout as ho
from workflow.calibration import IsotonicCalibrator
from workflow.dual_backbone import stratified_split
from workflow.dual_backbone.cli import main as db_main
from workflow.embed import load_embeddings
from workflow.pair_stage import gallery_labels, predict_queries
from workflow.thresholds import simulate_open_set_split
from workflow.wildfusion import fuse

DIMS = [12, 20]
FAST = {"views": 3, "proj_dim": 16, "epochs": 40, "batch_size": 64, "lr": 5e-3, "folds": 3}
TINY = {"source": "timm:resnet10t", "pretrained": False, "input_size": 32}


def synthetic_views(n_ids=12, per_id=5, views=3, seed=0):
    """Cached-view stand-ins ``[N x V x sum(DIMS)]``: a weak identity signal under strong per-image nuisance.

    The identity lives in 3 dimensions of each branch at a small scale; the other dimensions carry large random
    nuisance (different for every image and view), so the cosine of the raw features barely sees the identity
    while a trained BatchNorm + projection can learn to keep only the informative dimensions.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, sum(DIMS)))
    informative = np.zeros(sum(DIMS), bool)
    informative[[0, 1, 2, DIMS[0], DIMS[0] + 1, DIMS[0] + 2]] = True
    ids = np.repeat([f"id{i:02d}" for i in range(n_ids)], per_id).astype(object)
    base = np.repeat(centres, per_id, axis=0)[:, None, :] * informative * 0.6
    x = base + rng.normal(size=(len(ids), views, sum(DIMS))) * np.where(informative, 0.15, 2.0)
    return x.astype(np.float32), ids


def _fit(views, ids, val_fraction=0.25, cfg=FAST):
    classes = sorted(set(ids))
    labels = pd.Categorical(ids, classes).codes.astype(np.int64)
    tr, va = stratified_split(ids, val_fraction, 0)
    return fz.train_head(views[tr], labels[tr], len(classes), DIMS, cfg, {"s": 16, "m": 0.2},
                         (views[va, 0], labels[va]), 0)  # fmt: skip


def test_smoke_training_beats_untrained_start_on_synthetic_data():
    views, ids = synthetic_views()
    model, head, history = _fit(views, ids)
    assert list(history.columns) == fz.HISTORY_COLUMNS
    assert history["epoch"].tolist() == list(range(FAST["epochs"] + 1))
    start = history["val_ncm"].iloc[0]
    end = _kept_ncm(model, views, ids)
    assert end > start + 0.3, f"trained {end} not above the untrained nearest class mean {start}"
    assert end == history["val_ncm"].max()  # the kept weights are those of the best validation epoch
    assert history["val_accuracy"].iloc[1:].max() > start
    assert history["loss"].iloc[-1] < history["loss"].iloc[1]
    emb = fz.project(model, views[:, 0])
    assert emb.shape == (len(ids), FAST["proj_dim"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def _kept_ncm(model, views, ids, val_fraction=0.25):
    """Nearest-class-mean validation accuracy of the returned model (same split as :func:`_fit`)."""
    labels = pd.Categorical(ids, sorted(set(ids))).codes
    tr, va = stratified_split(ids, val_fraction, 0)
    return fz.class_mean_accuracy(fz.project(model, views[tr, 0]), labels[tr], fz.project(model, views[va, 0]),
                                  labels[va])  # fmt: skip


def test_exception_bad_config():
    with pytest.raises(ValueError, match="unknown dual_backbone.frozen key"):
        fz.resolve_frozen({"epoch": 3})
    with pytest.raises(ValueError, match="views must be an integer"):
        fz.resolve_frozen({"views": 0})
    with pytest.raises(ValueError, match="expects x"):
        fz.FrozenHead(DIMS, 8)(torch.zeros(2, 5))


def test_model_save_load_roundtrip(tmp_path):
    views, ids = synthetic_views()
    model, head, _ = _fit(views, ids)
    path = tmp_path / "model.pt"
    fz.save_frozen_model(path, model, head, sorted(set(ids)), {"frozen": FAST, "dims": DIMS})
    assert fz.is_frozen_model(path)
    model2, head2, classes, settings = fz.load_frozen_model(path)
    assert classes == sorted(set(ids)) and settings["dims"] == DIMS
    assert (head2.s, head2.m) == (16.0, 0.2)
    np.testing.assert_allclose(fz.project(model2, views[:, 0]), fz.project(model, views[:, 0]), atol=1e-6)
    torch.save({"specs": []}, tmp_path / "finetuned.pt")
    assert not fz.is_frozen_model(tmp_path / "finetuned.pt")
    with pytest.raises(ValueError, match="not a frozen-mode"):
        fz.load_frozen_model(tmp_path / "finetuned.pt")


TUNING = {"new_fraction": 0.33, "query_fraction": 0.3, "repeats": 3, "grid_size": 11, "seed": 5}


def test_pseudo_runs_columns_splits_and_held_out_training(monkeypatch):
    views, ids = synthetic_views()
    image_ids = np.array([f"img{i}" for i in range(len(ids))], dtype=object)
    trained_on = []
    real_fit = fz.fit_on_rows

    def spy(views_, identities, rows, *a, **kw):
        trained_on.append(set(int(r) for r in rows))
        return real_fit(views_, identities, rows, *a, **kw)

    monkeypatch.setattr(ho, "fit_on_rows", spy)
    pseudo = ho.pseudo_runs(views, ids, image_ids, DIMS, FAST, {"s": 16, "m": 0.2}, TUNING)
    assert list(pseudo.columns) == ho.PSEUDO_COLUMNS
    types = pd.api.types
    assert types.is_integer_dtype(pseudo["split"]) and types.is_float_dtype(pseudo["score"])
    assert types.is_bool_dtype(pseudo["is_new"])
    for column in ("image_id", "identity", "truth"):
        assert types.is_string_dtype(pseudo[column]), column
    rng = np.random.default_rng(TUNING["seed"])
    pos = {v: i for i, v in enumerate(image_ids)}
    for r in range(TUNING["repeats"]):
        split = simulate_open_set_split(ids, TUNING["new_fraction"], TUNING["query_fraction"], rng)
        run = pseudo[pseudo["split"] == r]
        assert [pos[i] for i in run["image_id"]] == split.query.tolist()
        assert run["is_new"].tolist() == split.is_new.tolist()
        assert run["truth"].tolist() == ids[split.query].tolist()
        # the head of split r was trained on its pseudo-gallery only, never on a pseudo-query
        assert trained_on[r] == set(split.gallery.tolist())
        assert not trained_on[r] & set(split.query.tolist())
        # predictions come from the pseudo-gallery: a pseudo-new query can never be right
        assert set(run["identity"]) <= set(ids[split.gallery])
    assert pseudo["score"].between(0, 1).all()
    # the replaying scorer gives the same answers in the tuning's split order
    scorer = ho.pseudo_scorer(pseudo, image_ids)
    rng = np.random.default_rng(TUNING["seed"])
    split = simulate_open_set_split(ids, TUNING["new_fraction"], TUNING["query_fraction"], rng)
    top_id, score = scorer(split.query, split.gallery)
    assert list(top_id) == pseudo.loc[pseudo["split"] == 0, "identity"].tolist()


def test_abstaining_pseudo_has_the_same_splits():
    _, ids = synthetic_views()
    image_ids = np.array([f"img{i}" for i in range(len(ids))], dtype=object)
    out = ho.abstaining_pseudo(ids, image_ids, TUNING)
    assert list(out.columns) == ho.PSEUDO_COLUMNS
    assert (out["identity"] == "").all() and np.isneginf(out["score"]).all()
    assert sorted(out["split"].unique()) == [0, 1, 2]


def test_trained_source_is_held_out_and_calibrated_in_fusion(monkeypatch):
    """Hand-made case: the global cosine cannot tell the candidates apart, the trained similarity can."""
    views, ids = synthetic_views(n_ids=12, per_id=5)
    gal = np.arange(len(ids))[np.arange(len(ids)) % 5 != 4]  # 4 gallery images per individual
    qry = np.arange(len(ids))[np.arange(len(ids)) % 5 == 4]  # 1 query per individual (all known)
    image_ids = np.array([f"img{i}" for i in range(len(ids))], dtype=object)
    trained_without = []
    real_fit = fz.fit_on_rows

    def spy(views_, identities, rows, *a, **kw):
        trained_without.append(set(identities) - set(identities[rows]))
        return real_fit(views_, identities, rows, *a, **kw)

    monkeypatch.setattr(ho, "fit_on_rows", spy)
    model, _, _ = fz.train_head(views[gal], pd.Categorical(ids[gal]).codes.astype(np.int64), 12, DIMS, FAST,
                                {"s": 16, "m": 0.2}, None, 0)  # fmt: skip
    emb = fz.project(model, views[:, 0])
    rows = []
    for kind, sources in (("query", qry), ("gallery", gal)):
        for s in sources:  # every image against every other gallery image (a complete shortlist)
            rows += [(image_ids[s], image_ids[c], kind) for c in gal if c != s]
    pairs = pd.DataFrame(rows, columns=["query", "candidate", "kind"]).assign(cosine=0.5)
    scores = ho.heldout_pair_scores(pairs, image_ids, emb, gal, views[gal], ids[gal], DIMS, FAST,
                                    {"s": 16, "m": 0.2}, seed=0)  # fmt: skip
    assert len(trained_without) == FAST["folds"]
    folds = ho.fold_of_individuals(ids[gal], FAST["folds"], 0)
    fold_of = dict(zip(ids[gal], folds))
    for f, held in enumerate(trained_without):
        assert held == {i for i, g in fold_of.items() if g == f}  # each fold model never saw its fold
    assert scores[["query", "candidate"]].equals(pairs[["query", "candidate"]])
    q = (pairs["kind"] == "query").to_numpy()
    pos = {v: i for i, v in enumerate(image_ids)}
    full = np.einsum("ij,ij->i", emb[pairs["query"].map(pos)], emb[pairs["candidate"].map(pos)])
    np.testing.assert_allclose(scores["score"].to_numpy()[q], full[q], atol=1e-5)  # queries: the stage's model
    assert not np.allclose(scores["score"].to_numpy()[~q], full[~q], atol=1e-3)  # gallery pairs: fold models

    identity = dict(zip(image_ids, ids))
    raw = pd.DataFrame({"cosine": pairs["cosine"], "trained": scores["score"]})
    g = (pairs["kind"] == "gallery").to_numpy()
    labels = gallery_labels(pairs[g], identity)
    cals = {name: IsotonicCalibrator().fit(raw.loc[g, name].to_numpy(), labels) for name in raw.columns}
    fused = fuse(raw, cals, {})
    preds = predict_queries(pairs[q], fused["fused"].to_numpy()[q], image_ids[qry], identity)
    acc = float((preds["top_identity"].to_numpy() == ids[qry]).mean())
    assert acc >= 0.75, f"fusion with the trained source found {acc:.2f} of the queries"
    assert cals["trained"].predict(np.array([1.0]))[0] > cals["cosine"].predict(np.array([0.5]))[0]


def test_entry_point_train_predict(tmp_path):
    """``dual_backbone train --mode frozen`` and ``predict`` end to end on tiny images with a tiny random branch."""
    rows = []
    for i in range(8):
        for j in range(4):
            path = write_image(tmp_path / "img" / f"{i}_{j}.png", size=(40, 40), seed=i * 10 + j)
            split = "query" if j == 3 else "database"
            rows.append({"image_id": f"{i}_{j}", "identity": f"ind{i}" if split == "database" else "", "split": split,
                         "abspath": str(path), "sha1": f"{i:02d}{j:02d}" + "0" * 36, "orientation": ""})  # fmt: skip
    meta = tmp_path / "meta.tsv"
    pd.DataFrame(rows).to_csv(meta, sep="\t", index=False)
    common = ["--metadata", str(meta), "--device", "cpu", "--cache", str(tmp_path / "cache")]
    db_main(["train", *common, "--mode", "frozen", "--backbones", json.dumps([TINY]), "--head", '{"s": 16, "m": 0.2}',
             "--frozen", json.dumps({**FAST, "epochs": 3}), "--training", '{"val_fraction": 0.2}',
             "--checkpoint-dir", str(tmp_path / "ck"), "--model-out", str(tmp_path / "model.pt"),
             "--history", str(tmp_path / "history.tsv")])  # fmt: skip
    history = pd.read_csv(tmp_path / "history.tsv", sep="\t")
    assert history["phase"].tolist() == ["untrained", "frozen", "frozen", "frozen"]
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 24 * FAST["views"]  # every gallery image, every view, cached
    out = {k: str(tmp_path / f"{k}") for k in ("predictions", "threshold", "curve", "pseudo", "emb")}
    db_main(["predict", *common, "--model", str(tmp_path / "model.pt"), "--dataset", "Tiny", "--threshold", '"auto"',
             "--tuning", json.dumps(TUNING), "--predictions", out["predictions"], "--threshold-out", out["threshold"],
             "--curve", out["curve"], "--pseudo-out", out["pseudo"],
             "--embeddings-out", out["emb"] + ".npz"])  # fmt: skip
    preds = pd.read_csv(out["predictions"], sep="\t", dtype=str)
    assert preds["image_id"].tolist() == [f"{i}_3" for i in range(8)]
    pseudo = pd.read_parquet(out["pseudo"])
    assert list(pseudo.columns) == ho.PSEUDO_COLUMNS and sorted(pseudo["split"].unique()) == [0, 1, 2]
    assert json.loads(Path(out["threshold"]).read_text())["source"] == "auto"
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 24 * FAST["views"] + 8  # queries: view 0 only
    # the shortlist's "trained" backbone and the fusion's "trained" source
    model_args = ["--model", str(tmp_path / "model.pt"), *common]
    db_main(["embed", *model_args, "--out", str(tmp_path / "trained.npz")])
    image_ids, emb = load_embeddings(tmp_path / "trained.npz")
    assert list(image_ids) == [r["image_id"] for r in rows] and emb.shape == (32, FAST["proj_dim"])
    gal = [r["image_id"] for r in rows if r["split"] == "database"]
    pairs = pd.DataFrame([(r["image_id"], g, "query" if r["split"] == "query" else "gallery") for r in rows
                          for g in gal[:5] if g != r["image_id"]], columns=["query", "candidate", "kind"])  # fmt: skip
    pairs.to_parquet(tmp_path / "shortlist.parquet")
    db_main(["pairs", *model_args, "--shortlist", str(tmp_path / "shortlist.parquet"), "--out", str(tmp_path / "p.pq")])
    scores = pd.read_parquet(tmp_path / "p.pq")
    assert list(scores.columns) == ["query", "candidate", "score"] and len(scores) == len(pairs)
    assert np.isfinite(scores["score"]).all() and scores["score"].between(-1.001, 1.001).all()


def _dogfacenet_root() -> Path:
    return Path(os.environ.get("DOGFACENET_ROOT", DOGFACENET))


@pytest.mark.slow
def test_dogfacenet_subset_training_beats_untrained_start(tmp_path):
    """250 random DogFaceNet dogs (721 gallery photos), 2 views, the stage's defaults but 10 epochs.

    Measured (2 cores, load ~30): nearest-class-mean validation accuracy 0.931 with the frozen ImageNet Lite0
    features, 0.944 in the trained embedding (72 validation photos). ``DOGFACENET_CACHE`` may name an existing
    view cache (the workflow's ``cache.embeddings``) to skip the embedding.
    """
    import hashlib

    root = _dogfacenet_root()
    if not (root / "metadata.csv").is_file():
        pytest.skip(f"DogFaceNet is not at {root} (set DOGFACENET_ROOT to its folder to run this test)")
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    gal = meta[meta["split"] == "database"]
    everyone = np.array(sorted(set(gal["identity"])), dtype=object)
    keep = set(np.random.default_rng(0).choice(everyone, 250, replace=False))
    sub = gal[gal["identity"].isin(keep)].reset_index(drop=True)
    paths = [str(root / p) for p in sub["path"]]
    sha1s = [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in paths]
    cache = os.environ.get("DOGFACENET_CACHE", str(tmp_path / "cache"))
    views, dims = fz.cached_views(paths, sha1s, [""] * len(sub), [{"source": "efficientnet-lite0"}], {}, 2, cache)
    ids = sub["identity"].to_numpy(dtype=object)
    labels = pd.Categorical(ids, sorted(set(ids))).codes.astype(np.int64)
    tr, va = stratified_split(ids, 0.1, 0)
    model, _, history = fz.train_head(views[tr], labels[tr], len(set(ids)), dims, {"views": 2, "epochs": 10},
                                      {"s": 64, "m": 0.5}, (views[va, 0], labels[va]), 0)  # fmt: skip
    start = history["val_ncm"].iloc[0]
    end = fz.class_mean_accuracy(fz.project(model, views[tr, 0]), labels[tr], fz.project(model, views[va, 0]),
                                 labels[va])  # fmt: skip
    assert end > start, f"trained {end:.3f} not above the untrained nearest class mean {start:.3f}"


def test_trained_query_pairs_on_the_fold_models_scale():
    """With the query features the stage model's query-pair scores keep their order but take the fold models' scale."""
    views, ids = synthetic_views(n_ids=12, per_id=5)
    gal = np.arange(len(ids))[np.arange(len(ids)) % 5 != 4]
    qry = np.arange(len(ids))[np.arange(len(ids)) % 5 == 4]
    image_ids = np.array([f"img{i}" for i in range(len(ids))], dtype=object)
    model, _, _ = fz.train_head(views[gal], pd.Categorical(ids[gal]).codes.astype(np.int64), 12, DIMS, FAST,
                                {"s": 16, "m": 0.2}, None, 0)  # fmt: skip
    emb = fz.project(model, views[:, 0])
    rows = [(image_ids[s], image_ids[c], "query") for s in qry for c in gal]
    rows += [(image_ids[s], image_ids[c], "gallery") for s in gal for c in gal if c != s]
    pairs = pd.DataFrame(rows, columns=["query", "candidate", "kind"])
    args = (pairs, image_ids, emb, gal, views[gal], ids[gal], DIMS, FAST, {"s": 16, "m": 0.2})
    plain = ho.heldout_pair_scores(*args, seed=0)
    mapped = ho.heldout_pair_scores(*args, seed=0, features=views[:, 0])
    q = (pairs["kind"] == "query").to_numpy()
    np.testing.assert_array_equal(mapped["score"].to_numpy()[~q], plain["score"].to_numpy()[~q])  # gallery pairs
    a, b = plain["score"].to_numpy()[q], mapped["score"].to_numpy()[q]
    assert (np.diff(b[np.argsort(a, kind="stable")]) >= -1e-12).all()  # same order
    # the fold models' own scores of the query pairs: the reference the mapped scores follow
    folds = ho.fold_of_individuals(ids[gal], FAST["folds"], 0)
    pos = {v: i for i, v in enumerate(image_ids)}
    qi, ci = pairs["query"][q].map(pos).to_numpy(), pairs["candidate"][q].map(pos).to_numpy()
    reference = []
    for f in range(FAST["folds"]):
        fold_model = fz.fit_on_rows(views[gal], ids[gal], np.flatnonzero(folds != f), DIMS, FAST, {"s": 16, "m": 0.2},
                                    f)  # fmt: skip
        femb = fz.project(fold_model, views[:, 0])
        reference.append(np.einsum("ij,ij->i", femb[qi], femb[ci]))
    reference = np.concatenate(reference)
    assert abs(np.median(b) - np.median(reference)) < 0.02
    assert abs(np.median(a) - np.median(reference)) > abs(np.median(b) - np.median(reference))
