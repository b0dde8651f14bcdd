"""XGBoost meta-classifier on concatenated embeddings and neighbour features, gating a pair stage (paper step 4).

(Named ``xgb`` so that it does not shadow the ``xgboost`` library.)

Subcommands (one rule each):

``train``  ``results/data/<dataset>.tsv`` + ``results/embeddings/<dataset>/<backbone>/<key>.npz`` of each configured
           backbone -> ``results/xgboost/<dataset>/<key>/model.ubj`` (the booster) and ``model.json`` (classes,
           feature layout with the category lists, parameters, best round, measured time and peak memory).
           Classes are the dataset's gallery individuals; validation (early stopping) holds out one image of
           every individual with two or more images, as the paper describes.
``gate``   the model + the base stage's predictions (``wildfusion`` or ``rerank``) -> the ``xgboost`` stage's
           ``predictions.tsv``, ``threshold.json`` (the gate threshold) and ``threshold_curve.tsv``: where the
           model's top class probability exceeds the dataset's gate threshold its class replaces the base label.
``pseudo``  -> ``results/stages/xgboost/<dataset>/pseudo.parquet`` (for ``cascade: auto``): auxiliary models
           trained on each of the first ``--repeats`` simulated open-set splits of the gallery
           (:func:`pseudo_xgb_table`), never judged on their own training images.

Features of one image (:func:`feature_columns`; paper: 3688 + 10 + 10 + 7 + 3 = 3718 columns), in this order:

1. ``emb_<backbone>_<i>``: each backbone's embedding L2-normalised on its own, concatenated (``sum D_b``);
2. ``nn_cos_1..k``: cosine similarity to the ``k`` nearest gallery images (on the concatenation rescaled to
   unit norm, i.e. the mean of the per-backbone cosines), best first; NaN where the gallery is smaller;
3. ``nn_id_1..k``: those neighbours' identities, pandas Categorical over the training identities plus
   :data:`OTHER` (an identity unseen in training maps to it), used through ``enable_categorical``;
4. ``orient_<value>``: one-hot orientation (vocabulary of the training images; unseen -> all zeros);
5. ``dataset_<value>``: one-hot dataset (one column with a per-dataset model).

A gallery image's neighbours never include the image itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.cli import arg, command, run_stage, stage_parser
from workflow.device import resolve_device
from workflow.embed import l2_normalise, load_embeddings
from workflow.metrics import score_predictions
from workflow.robust import plateau_pick
from workflow.shortlist import topk_inner_product
from workflow.stage_io import atomic_path, read_json, read_tsv, write_json, write_parquet, write_stage_outputs
from workflow.thresholds import (
    CURVE_COLUMNS,
    pair_scorer,
    pseudo_splits,
    pseudo_table,
    resolve_threshold,
    simulate_open_set_split,
)

logger = logging.getLogger(__name__)

# The category of a neighbour identity unseen in training. It starts with a control character, which validation
# refuses in identities (workflow.data.check_ids), so no real identity (not even one named "other") can collide.
OTHER = "\x1fother"


@dataclass
class FeatureSpace:
    """The layout of the feature table; saved with the model so prediction rebuilds the same columns."""

    backbones: list[str]  # names, in concatenation order
    dims: list[int]  # D_b of each backbone
    k: int = 10  # neighbours
    identities: list[str] = field(default_factory=list)  # categories of nn_id_* (training identities + OTHER)
    orientations: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        """``sum(dims) + 2 k + len(orientations) + len(datasets)``."""
        return sum(self.dims) + 2 * self.k + len(self.orientations) + len(self.datasets)


def feature_columns(space: FeatureSpace) -> list[str]:
    """Column names in feature order (see the module docstring); ``len == space.width``."""
    cols = [f"emb_{b}_{i}" for b, d in zip(space.backbones, space.dims) for i in range(d)]
    cols += [f"nn_cos_{j}" for j in range(1, space.k + 1)]
    cols += [f"nn_id_{j}" for j in range(1, space.k + 1)]
    cols += [f"orient_{o}" for o in space.orientations]
    cols += [f"dataset_{d}" for d in space.datasets]
    return cols


def concat_embeddings(blocks: list[np.ndarray]) -> np.ndarray:
    """Blocks ``[N x D_b]`` each L2-normalised, concatenated -> ``[N x sum D_b]``."""
    if not blocks:
        raise ValueError("no embedding block to concatenate: configure xgboost.backbones")
    n = {len(b) for b in blocks}
    if len(n) != 1:
        raise ValueError(f"embedding blocks have different row counts {sorted(n)}")
    return np.concatenate([l2_normalise(b) for b in blocks], axis=1)


def neighbours(
    x: np.ndarray, pool: np.ndarray, pool_identity: np.ndarray, k: int, self_index: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine ``[N x k]`` and identity ``[N x k]`` of each row's ``k`` nearest pool rows, best first.

    ``x: [N x D]`` and ``pool: [G x D]`` are the concatenated embeddings; ``self_index: [N]`` is each row's own
    index in the pool (``-1`` when it is not there), which is then never its own neighbour. Missing neighbours
    (pool smaller than ``k``) are NaN / None.
    """
    xn, pn = l2_normalise(x), l2_normalise(pool)
    self_index = np.full(len(x), -1) if self_index is None else np.asarray(self_index, np.int64)
    cos = np.full((len(x), k), np.nan, np.float32)
    ids = np.full((len(x), k), None, dtype=object)
    if len(pool) == 0 or len(x) == 0:
        return cos, ids
    idx, sim = topk_inner_product(xn, pn, k + 1)
    pool_identity = np.asarray(pool_identity, dtype=object)
    for r in range(len(x)):
        keep = idx[r] != self_index[r]
        row_idx, row_sim = idx[r][keep][:k], sim[r][keep][:k]
        cos[r, : len(row_idx)] = row_sim
        ids[r, : len(row_idx)] = pool_identity[row_idx]
    return cos, ids


def assemble_features(
    space: FeatureSpace,
    emb: np.ndarray,
    nn_cos: np.ndarray,
    nn_ids: np.ndarray,
    orientation: np.ndarray,
    dataset: np.ndarray,
) -> pd.DataFrame:
    """The feature table ``[N x space.width]`` in :func:`feature_columns` order.

    ``emb: [N x sum D_b]`` (from :func:`concat_embeddings`), ``nn_cos: [N x k]``, ``nn_ids: [N x k]``,
    ``orientation: [N]``, ``dataset: [N]``.
    """
    n = len(emb)
    if emb.shape[1] != sum(space.dims):
        raise ValueError(f"embeddings have {emb.shape[1]} columns, the feature space expects {sum(space.dims)} "
                         f"({dict(zip(space.backbones, space.dims))})")  # fmt: skip
    if nn_cos.shape != (n, space.k) or nn_ids.shape != (n, space.k):
        raise ValueError(f"neighbour arrays must be [{n} x {space.k}], got {nn_cos.shape} and {nn_ids.shape}")
    cols = feature_columns(space)
    parts: dict[str, object] = {}
    e = np.asarray(emb, np.float32)
    for j in range(e.shape[1]):
        parts[cols[j]] = e[:, j]
    for j in range(space.k):
        parts[f"nn_cos_{j + 1}"] = np.asarray(nn_cos[:, j], np.float32)
    known = set(space.identities)
    other = space.identities[-1] if space.identities else OTHER  # the last category (models saved before: "other")
    for j in range(space.k):
        vals = [v if v is None or v in known else other for v in nn_ids[:, j]]
        parts[f"nn_id_{j + 1}"] = pd.Categorical(vals, categories=space.identities)
    orientation = np.asarray(orientation, dtype=object)
    for o in space.orientations:
        parts[f"orient_{o}"] = (orientation == o).astype(np.float32)
    dataset = np.asarray(dataset, dtype=object)
    for d in space.datasets:
        parts[f"dataset_{d}"] = (dataset == d).astype(np.float32)
    return pd.DataFrame(parts, columns=cols)


def holdout_one_per_individual(identities: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): one random image of every individual with >= 2 images is held out."""
    identities = np.asarray(identities, dtype=object)
    val = []
    for ident in sorted(set(identities)):
        rows = np.flatnonzero(identities == ident)
        if len(rows) >= 2:
            val.append(int(rng.choice(rows)))
    val = np.asarray(sorted(val), np.int64)
    train = np.setdiff1d(np.arange(len(identities)), val)
    return train, val


@dataclass
class TrainedModel:
    """A booster with its class list and feature layout (plain artifacts: ``.ubj`` + ``.json``)."""

    booster: object
    classes: list[str]
    space: FeatureSpace
    best_iteration: int
    info: dict

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Class probabilities ``[N x C]`` (columns in ``classes`` order)."""
        import xgboost as xgb

        if len(features) == 0:
            return np.zeros((0, len(self.classes)))
        dm = xgb.DMatrix(features, enable_categorical=True)
        prob = self.booster.predict(dm, iteration_range=(0, self.best_iteration + 1))
        return np.asarray(prob, np.float64).reshape(len(features), len(self.classes))

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Top class ``[N]`` and its probability ``[N]``."""
        prob = self.predict_proba(features)
        if prob.shape[0] == 0:
            return np.zeros(0, dtype=object), np.zeros(0)
        top = prob.argmax(axis=1)
        return np.asarray(self.classes, dtype=object)[top], prob[np.arange(len(prob)), top]

    def save(self, model_path: str | Path, meta_path: str | Path) -> None:
        with atomic_path(model_path) as tmp:
            self.booster.save_model(str(tmp.with_suffix(".ubj")))
            tmp.with_suffix(".ubj").replace(tmp)
        meta = {"classes": self.classes, "space": asdict(self.space), "best_iteration": self.best_iteration,
                "info": self.info}  # fmt: skip
        write_json(meta, meta_path)

    @classmethod
    def load(cls, model_path: str | Path, meta_path: str | Path) -> TrainedModel:
        import xgboost as xgb

        meta = read_json(meta_path)
        booster = xgb.Booster()
        booster.load_model(str(model_path))
        return cls(booster, meta["classes"], FeatureSpace(**meta["space"]), int(meta["best_iteration"]), meta["info"])


# The schema's defaults of config ``xgboost`` (a test keeps them equal); the rules always pass the config's values.
DEFAULT_PARAMS = {
    "max_depth": 6,
    "eta": 0.15,
    "lambda": 2.0,
    "objective": "multi:softprob",
    "num_boost_round": 30,
    "early_stopping_rounds": 5,
    "max_bin": 64,
    "device": "cpu",
    "seed": 0,
}


def train_model(
    train: pd.DataFrame,
    train_labels: np.ndarray,
    val: pd.DataFrame,
    val_labels: np.ndarray,
    space: FeatureSpace,
    params: dict,
    threads: int | None = None,
) -> TrainedModel:
    """Fit ``multi:softprob`` on feature tables from :func:`assemble_features`; early stopping on ``val``.

    Classes are the sorted identities of ``train_labels``; validation rows of other identities are dropped.
    """
    import xgboost as xgb

    conf = {**DEFAULT_PARAMS, **params}
    classes = sorted(set(np.asarray(train_labels, dtype=object)))
    if len(classes) < 2:
        raise ValueError(f"XGBoost needs at least 2 training individuals, got {len(classes)}")
    code = {c: i for i, c in enumerate(classes)}
    y = np.array([code[c] for c in train_labels], np.float32)
    val_known = np.array([c in code for c in val_labels], bool)
    booster_params = {
        "max_depth": conf["max_depth"],
        "eta": conf["eta"],
        "lambda": conf["lambda"],
        "objective": conf["objective"],
        "num_class": len(classes),
        "tree_method": "hist",
        "device": resolve_device(conf["device"]),
        "eval_metric": "mlogloss",
        "seed": conf["seed"],
        "max_cat_to_onehot": 1,  # optimal-partition splits on the neighbour identities, as in the paper
        "max_bin": conf["max_bin"],
    }
    if threads:
        booster_params["nthread"] = threads
    dtrain = xgb.DMatrix(train, label=y, enable_categorical=True)
    evals = [(dtrain, "train")]
    early = None
    if val_known.any():
        yv = np.array([code[c] for c in np.asarray(val_labels, dtype=object)[val_known]], np.float32)
        evals.append((xgb.DMatrix(val[val_known], label=yv, enable_categorical=True), "val"))
        early = conf["early_stopping_rounds"]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    history: dict = {}
    booster = xgb.train(booster_params, dtrain, num_boost_round=conf["num_boost_round"], evals=evals,
                        early_stopping_rounds=early, evals_result=history, verbose_eval=False)  # fmt: skip
    seconds = time.perf_counter() - start
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rounds = booster.num_boosted_rounds()
    best = int(booster.best_iteration) if early else rounds - 1
    info = {
        "params": booster_params,
        "num_boost_round": conf["num_boost_round"],
        "early_stopping_rounds": early,
        "rounds_run": rounds,
        "best_iteration": best,
        "train_rows": len(train),
        "val_rows": int(val_known.sum()),
        "classes": len(classes),
        "features": space.width,
        "seconds": round(seconds, 3),
        "seconds_per_round": round(seconds / max(rounds, 1), 4),
        "peak_rss_mb": round(max(rss0, rss1) / 1024, 1),
        "val_mlogloss": float(history["val"]["mlogloss"][best]) if "val" in history else None,
    }
    logger.info("trained %d rounds (best %d) on %d rows x %d features, %d classes in %.2f s (%.3f s/round), "
                "peak RSS %.0f MB", rounds, best, len(train), space.width, len(classes), seconds,
                info["seconds_per_round"], info["peak_rss_mb"])  # fmt: skip
    return TrainedModel(booster, classes, space, best, info)


def build_space(
    backbones: list[str], blocks: list[np.ndarray], k: int, identities, orientations, datasets
) -> FeatureSpace:
    return FeatureSpace(
        backbones=list(backbones),
        dims=[int(b.shape[1]) for b in blocks],
        k=int(k),
        identities=[*sorted(set(identities) - {OTHER}), OTHER],
        orientations=sorted(set(orientations)),
        datasets=sorted(set(datasets)),
    )


def _rows(meta: pd.DataFrame, image_ids: np.ndarray, path: str) -> np.ndarray:
    row_of = {i: r for r, i in enumerate(image_ids)}
    missing = [i for i in meta["image_id"] if i not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no embedding in {path}, e.g. {missing[0]!r}")
    return np.array([row_of[i] for i in meta["image_id"]], np.int64)


def load_blocks(meta: pd.DataFrame, paths: list[str]) -> list[np.ndarray]:
    """Each backbone's embeddings ``[N x D_b]`` in the row order of ``meta``."""
    blocks = []
    for path in paths:
        ids, emb = load_embeddings(path)
        blocks.append(emb[_rows(meta, ids, path)])
    return blocks


def table_for(
    space: FeatureSpace, x: np.ndarray, meta: pd.DataFrame, rows: np.ndarray, pool_rows: np.ndarray
) -> pd.DataFrame:
    """Features of ``meta`` rows ``rows`` with neighbours among ``pool_rows`` (never the row itself)."""
    pos = {int(r): i for i, r in enumerate(pool_rows)}
    self_index = np.array([pos.get(int(r), -1) for r in rows], np.int64)
    identity = meta["identity"].to_numpy(dtype=object)
    cos, ids = neighbours(x[rows], x[pool_rows], identity[pool_rows], space.k, self_index)
    return assemble_features(space, x[rows], cos, ids, orientations(meta)[rows],
                             meta["dataset"].to_numpy(dtype=object)[rows])  # fmt: skip


def orientations(meta: pd.DataFrame) -> np.ndarray:
    """The ``orientation`` column ``[N]`` with empty values as ``unknown``."""
    values = meta["orientation"].fillna("").astype(str).to_numpy(dtype=object)
    return np.where(values == "", "unknown", values)


def fit_dataset(
    meta: pd.DataFrame,
    blocks: list[np.ndarray],
    backbones: list[str],
    params: dict,
    k: int,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    threads: int | None = None,
) -> TrainedModel:
    """Train on gallery rows ``train_rows`` (neighbour pool = training rows), validate on ``val_rows``."""
    x = concat_embeddings(blocks)
    identity = meta["identity"].to_numpy(dtype=object)
    space = build_space(backbones, blocks, k, identity[train_rows], orientations(meta)[train_rows],
                        meta["dataset"].to_numpy(dtype=object)[train_rows])  # fmt: skip
    train = table_for(space, x, meta, train_rows, train_rows)
    val = table_for(space, x, meta, val_rows, train_rows)
    return train_model(train, identity[train_rows], val, identity[val_rows], space, params, threads)


def apply_gate(base_identity: np.ndarray, xgb_class: np.ndarray, xgb_prob: np.ndarray, threshold: float) -> np.ndarray:
    """XGBoost's class where its top probability exceeds ``threshold`` (strictly), else the base label."""
    base_identity = np.asarray(base_identity, dtype=object)
    if len(base_identity) == 0:
        return base_identity
    return np.where(np.asarray(xgb_prob, float) > threshold, np.asarray(xgb_class, dtype=object), base_identity)


def tune_gate(
    meta: pd.DataFrame,
    blocks: list[np.ndarray],
    backbones: list[str],
    params: dict,
    k: int,
    base_pairs: pd.DataFrame,
    base_score: np.ndarray,
    base_threshold: float,
    tuning: dict,
    threads: int | None = None,
) -> tuple[float, pd.DataFrame]:
    """An ``auto`` gate threshold from the gallery alone (no query truth).

    One simulated open-set split of the gallery (:func:`workflow.thresholds.simulate_open_set_split`:
    ``new_fraction`` of the individuals held out as pseudo-new, one image of each other individual with two or
    more images held out as pseudo-known). An auxiliary model is trained on the rest (early stopping on the
    pseudo-known images); the base stage labels each pseudo-query from its gallery pairs restricted to the
    rest (its own threshold); the gate threshold maximising ``sqrt(BAKS * BAUS)`` of the gated labels wins.
    """

    gal = np.flatnonzero((meta["split"] == "database").to_numpy())
    gmeta = meta.iloc[gal].reset_index(drop=True)
    gblocks = [b[gal] for b in blocks]
    identity = gmeta["identity"].to_numpy(dtype=object)
    rng = np.random.default_rng(tuning["seed"])
    split = simulate_open_set_split(identity, tuning["new_fraction"], 1e-9, rng)
    train_rows = np.sort(split.gallery)
    known_q = split.query[~split.is_new]
    model = fit_dataset(gmeta, gblocks, backbones, params, k, train_rows, known_q, threads)
    x = concat_embeddings(gblocks)
    cls, prob = model.predict(table_for(model.space, x, gmeta, split.query, train_rows))
    gpos = {g: i for i, g in enumerate(gmeta["image_id"])}
    gp = base_pairs[(base_pairs["kind"] == "gallery").to_numpy()]
    keep = (base_pairs["kind"] == "gallery").to_numpy()
    scorer = pair_scorer(gp["query"].map(gpos).to_numpy(), gp["candidate"].map(gpos).to_numpy(),
                         np.asarray(base_score)[keep], identity)  # fmt: skip
    top_id, top_score = scorer(split.query, train_rows)
    base = np.where(top_score >= base_threshold, top_id, NEW_INDIVIDUAL)
    truth = identity[split.query]
    grid = np.round(np.linspace(0, 1, 101), 4)
    rows = [{"threshold": float(t), **score_predictions(truth, apply_gate(base, cls, prob, t), split.is_new)}
            for t in grid]  # fmt: skip
    curve = pd.DataFrame(rows)[CURVE_COLUMNS]
    threshold = plateau_pick(grid, curve["score"].to_numpy()[None]).threshold  # one split: no spread to widen it
    best = curve.loc[curve["threshold"] == threshold].iloc[0]
    logger.info("auto gate %.2f: simulated score %.3f (BAKS %.3f, BAUS %.3f) on %d pseudo-queries (%d new); "
                "base stage alone %.3f", threshold, best["score"], best["BAKS"], best["BAUS"], len(split.query),
                int(split.is_new.sum()), curve["score"].iloc[-1])  # fmt: skip
    return threshold, curve


def pseudo_xgb_table(
    meta: pd.DataFrame,
    blocks: list[np.ndarray],
    backbones: list[str],
    params: dict,
    k: int,
    tuning: dict,
    repeats: int,
    threads: int | None = None,
) -> pd.DataFrame:
    """The stage's ``pseudo.parquet`` on the first ``repeats`` simulated open-set splits of the gallery.

    A trained source is never judged on its own training images: on each split an auxiliary model is trained on
    the pseudo-gallery only (early stopping on one held-out image per individual, as the real model) and
    predicts the pseudo-queries (identity = its top class, score = that class's probability).
    """

    gal = np.flatnonzero((meta["split"] == "database").to_numpy())
    gmeta = meta.iloc[gal].reset_index(drop=True)
    gblocks = [b[gal] for b in blocks]
    identity = gmeta["identity"].to_numpy(dtype=object)
    x = concat_embeddings(gblocks)

    def predict(i: int, split) -> tuple[np.ndarray, np.ndarray]:
        pool = np.sort(split.gallery)
        inner_train, inner_val = holdout_one_per_individual(
            identity[pool], np.random.default_rng(int(params.get("seed", 0)) + i)
        )
        model = fit_dataset(gmeta, gblocks, backbones, params, k, pool[inner_train], pool[inner_val], threads)
        return model.predict(table_for(model.space, x, gmeta, split.query, pool))

    return pseudo_table(
        pseudo_splits(identity, tuning, repeats), gmeta["image_id"].to_numpy(dtype=object), identity, predict
    )


def _inputs(args: argparse.Namespace) -> tuple[dict, int, dict, pd.DataFrame, list[np.ndarray]]:
    """``(conf, neighbours, XGBoost params, metadata, embedding blocks)`` of a command."""
    conf = json.loads(args.conf)
    k = int(conf["neighbours"])
    params = {key: conf[key] for key in DEFAULT_PARAMS if key in conf}
    if args.device:  # the job's device (its gpu resource) decides, not xgboost.device
        params["device"] = "cuda" if args.device.startswith("cuda") else args.device
    meta = read_tsv(args.metadata)
    return conf, k, params, meta, load_blocks(meta, args.embeddings)


def train(args: argparse.Namespace) -> None:
    """``train``: the dataset's model on its gallery (one image per individual held out for early stopping)."""
    conf, k, params, meta, blocks = _inputs(args)
    gal = np.flatnonzero((meta["split"] == "database").to_numpy())
    gmeta = meta.iloc[gal].reset_index(drop=True)
    rng = np.random.default_rng(int(conf["seed"]))
    train_rows, val_rows = holdout_one_per_individual(gmeta["identity"].to_numpy(dtype=object), rng)
    model = fit_dataset(gmeta, [b[gal] for b in blocks], args.backbones, params, k, train_rows, val_rows,
                        args.threads)  # fmt: skip
    model.save(args.model, args.model_meta)


def pseudo(args: argparse.Namespace) -> None:
    """``pseudo``: ``pseudo.parquet`` of auxiliary models trained on the simulated splits of the gallery."""
    _, k, params, meta, blocks = _inputs(args)
    table = pseudo_xgb_table(meta, blocks, args.backbones, params, k, json.loads(args.tuning), args.repeats,
                             args.threads)  # fmt: skip
    write_parquet(table, args.pseudo)


def gate(args: argparse.Namespace) -> None:
    """``gate``: XGBoost's class replaces the base stage's label where its probability exceeds the gate."""
    _, k, params, meta, blocks = _inputs(args)
    model = TrainedModel.load(args.model, args.model_meta)
    x = concat_embeddings(blocks)
    gal = np.flatnonzero((meta["split"] == "database").to_numpy())
    qry = np.flatnonzero((meta["split"] == "query").to_numpy())
    cls, prob = model.predict(table_for(model.space, x, meta, qry, gal))
    base = read_tsv(args.base_predictions).set_index("image_id").reindex(meta["image_id"].iloc[qry])
    setting = resolve_threshold(json.loads(args.threshold), args.dataset)
    if setting == "auto":
        pairs = pd.read_parquet(args.base_pairs)
        base_threshold = float(read_json(args.base_threshold)["threshold"])
        threshold, curve = tune_gate(meta, blocks, args.backbones, params, k, pairs,
                                     pairs[args.score_column].to_numpy(np.float64), base_threshold,
                                     json.loads(args.tuning), args.threads)  # fmt: skip
        info = {"threshold": threshold, "source": "auto", "tuning": json.loads(args.tuning)}
    else:
        threshold, curve = setting, pd.DataFrame(columns=CURVE_COLUMNS)
        info = {"threshold": threshold, "source": "config"}
    identity = apply_gate(base["identity"].to_numpy(dtype=object), cls, prob, threshold)
    preds = pd.DataFrame(
        {
            "image_id": meta["image_id"].iloc[qry].to_numpy(),
            "identity": identity,
            "top_identity": cls,
            "top_score": prob,
            "base_identity": base["identity"].to_numpy(),
        }
    )
    overridden = int((identity != preds["base_identity"].to_numpy(dtype=object)).sum())
    info.update(overridden=overridden, queries=len(preds))
    logger.info("%s: gate %.3f (%s): XGBoost changed %d of %d labels", args.dataset, threshold, info["source"],
                overridden, len(preds))  # fmt: skip
    write_stage_outputs(args.dataset, preds, info, curve, args.predictions, args.threshold_out, args.curve)


def main(argv: list[str] | None = None) -> None:
    model = (arg("--model", required=True), arg("--model-meta", required=True))
    commands = {
        "train": command(None, *model),
        "gate": command(None, *model, arg("--base-predictions", required=True), arg("--base-pairs", required=True),
                        arg("--base-threshold", required=True), arg("--score-column", required=True), "dataset",
                        arg("--threshold", help="JSON gate threshold: number, 'auto' or {dataset: value}"),
                        "tuning predictions threshold-out curve"),
        "pseudo": command(None, arg("--tuning", help="JSON: threshold_tuning (the splits)"),
                          arg("--repeats", type=int, default=1, help="splits (one auxiliary model each)"),
                          arg("--pseudo", required=True)),
    }  # fmt: skip
    parser = stage_parser(
        __doc__, "metadata",
        arg("--embeddings", nargs="+", help="one .npz per backbone, in --backbones order"),
        arg("--backbones", nargs="+", required=True), arg("--conf", help="JSON: the xgboost config section"),
        arg("--device", default=None, help="cpu, auto or cuda (default: the conf's device)"), "threads log",
        commands=commands,
    )  # fmt: skip
    run_stage(parser, argv, {"train": train, "gate": gate, "pseudo": pseudo})


if __name__ == "__main__":
    main()
