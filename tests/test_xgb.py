"""XGBoost meta-classifier: feature layout, neighbour features, unseen identities, the gate."""

import numpy as np
import pandas as pd
import pytest

from workflow.xgb import (
    OTHER,
    TrainedModel,
    apply_gate,
    assemble_features,
    build_space,
    concat_embeddings,
    feature_columns,
    fit_dataset,
    holdout_one_per_individual,
    neighbours,
    table_for,
)


def _gallery(n_ids=4, per_id=5, seed=0):
    """Two backbones (4-d and 3-d) with one cluster per individual, in a metadata-like table."""
    rng = np.random.default_rng(seed)
    centres = [rng.normal(size=(n_ids, d)) * 3 for d in (4, 3)]
    ident = np.repeat([f"id{i}" for i in range(n_ids)], per_id)
    codes = np.repeat(np.arange(n_ids), per_id)
    blocks = [c[codes] + rng.normal(scale=0.3, size=(len(codes), c.shape[1])) for c in centres]
    meta = pd.DataFrame({
        "image_id": [f"g{i}" for i in range(len(ident))], "identity": ident, "split": "database",
        "orientation": np.where(np.arange(len(ident)) % 2, "left", ""), "dataset": "Toy",
    })  # fmt: skip
    return meta, blocks


def test_feature_width_and_column_order():
    meta, blocks = _gallery()
    space = build_space(["mega", "miew"], blocks, 3, meta["identity"], ["left", "unknown"], ["Toy"])
    cols = feature_columns(space)
    assert space.width == len(cols) == 4 + 3 + 3 + 3 + 2 + 1
    assert cols[:8] == [f"emb_mega_{i}" for i in range(4)] + [f"emb_miew_{i}" for i in range(3)] + ["nn_cos_1"]
    assert cols[7:] == ["nn_cos_1", "nn_cos_2", "nn_cos_3", "nn_id_1", "nn_id_2", "nn_id_3", "orient_left",
                        "orient_unknown", "dataset_Toy"]  # fmt: skip
    assert space.identities[-1] == OTHER
    x = concat_embeddings(blocks)
    np.testing.assert_allclose(np.linalg.norm(x[:, :4], axis=1), 1, rtol=1e-5)  # each block on its own
    np.testing.assert_allclose(np.linalg.norm(x[:, 4:], axis=1), 1, rtol=1e-5)
    table = table_for(space, x, meta, np.arange(len(meta)), np.arange(len(meta)))
    assert list(table.columns) == cols
    assert all(isinstance(table[f"nn_id_{j}"].dtype, pd.CategoricalDtype) for j in (1, 2, 3))
    assert table["orient_unknown"].sum() == (meta["orientation"] == "").sum()


def test_paper_width_is_3718():
    blocks = [np.zeros((1, 1536)), np.zeros((1, 2152))]
    space = build_space(["megadescriptor", "miewid"], blocks, 10, ["a"], [f"o{i}" for i in range(7)], ["L", "S", "T"])
    assert space.width == 3718


def test_neighbours_exclude_the_image_itself():
    x = np.eye(3, dtype=np.float32) + 0.1
    cos, ids = neighbours(x, x, np.array(["a", "b", "c"], object), k=2, self_index=np.arange(3))
    assert all(ids[r, j] != "abc"[r] for r in range(3) for j in range(2))
    cos, ids = neighbours(x, x, np.array(["a", "b", "c"], object), k=5, self_index=np.arange(3))
    assert np.isnan(cos[:, 2:]).all() and (ids[:, 2:] == None).all()  # noqa: E711 - only 2 others exist


def test_holdout_keeps_singletons_in_training():
    train, val = holdout_one_per_individual(np.array(["a", "a", "b", "c", "c", "c"], object), np.random.default_rng(0))
    ident = np.array(["a", "a", "b", "c", "c", "c"], object)
    assert sorted(ident[val]) == ["a", "c"] and "b" in ident[train]
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    meta, blocks = _gallery()
    train, val = holdout_one_per_individual(meta["identity"].to_numpy(object), np.random.default_rng(0))
    params = {"num_boost_round": 20, "early_stopping_rounds": 5, "max_depth": 3}
    trained = fit_dataset(meta, blocks, ["mega", "miew"], params, 3, train, val, threads=1)
    path = tmp_path_factory.mktemp("model")
    trained.save(path / "model.ubj", path / "model.json")
    return TrainedModel.load(path / "model.ubj", path / "model.json"), meta, blocks


def test_model_roundtrip_predicts_the_cluster(model):
    trained, meta, blocks = model
    assert trained.classes == ["id0", "id1", "id2", "id3"]
    assert trained.info["val_rows"] == 4 and trained.info["features"] == trained.space.width
    x = concat_embeddings(blocks)
    cls, prob = trained.predict(table_for(trained.space, x, meta, np.arange(len(meta)), np.arange(len(meta))))
    assert (cls == meta["identity"].to_numpy()).mean() > 0.9
    assert ((prob > 0) & (prob <= 1)).all()


def test_unseen_neighbour_identity_and_orientation_do_not_crash(model):
    trained, meta, blocks = model
    x = concat_embeddings(blocks)
    pool_ids = np.array(["never_seen"] * len(meta), object)  # a gallery of individuals unknown to the model
    cos, ids = neighbours(x, x, pool_ids, trained.space.k)
    feats = assemble_features(trained.space, x, cos, ids, np.array(["upside-down"] * len(meta), object),
                              np.array(["Other"] * len(meta), object))  # fmt: skip
    assert (feats["nn_id_1"] == OTHER).all()
    assert feats[[c for c in feats.columns if c.startswith(("orient_", "dataset_"))]].to_numpy().sum() == 0
    cls, prob = trained.predict(feats)
    assert len(cls) == len(meta) and set(cls) <= set(trained.classes)


def test_gate_overrides_only_above_its_threshold():
    base = np.array(["new_individual", "a", "b", "c"], object)
    cls = np.array(["x", "y", "z", "w"], object)
    prob = np.array([0.5, 0.2, 0.95, 0.96])
    assert apply_gate(base, cls, prob, 0.95).tolist() == ["new_individual", "a", "b", "w"]  # 0.95 is not above
    assert apply_gate(base, cls, prob, 0.1).tolist() == ["x", "y", "z", "w"]
    assert apply_gate(base, cls, prob, 1.0).tolist() == base.tolist()
    assert apply_gate(np.array([], object), np.array([], object), np.array([]), 0.5).shape == (0,)
