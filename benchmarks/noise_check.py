"""Noise check: do the ``auto`` decisions of a finished run stay the same when its inputs move in the last digits?

Another machine computes the same embeddings and match scores up to the last bits (other CPU kernels, other
library builds). This script redoes every gallery-tuned decision of a finished run from its stored inputs, once as
they are and once per seed with every embedding and raw pair score multiplied by ``1 + noise * N(0, 1)``:

- the baseline threshold (cosine 1-NN on the perturbed embeddings);
- WildFusion: calibrators refitted on the perturbed raw scores of the gallery pairs, the fusion (the trained and
  LNBNN sources chosen by ``auto`` where the run chose them so), its threshold;
- re-ranking: ``rerank.datasets: auto``'s on/off choice and the re-ranked threshold;
- ``cascade: auto`` on the stages' pseudo tables (trained stages' tables perturbed as they are).

It prints, per dataset, each decision and how far it moved (thresholds in grid steps of the stage's own curve), and
the largest change of a query score (``sqrt(BAKS * BAUS)`` of the WildFusion and re-ranking predictions) when the
data has a solution.csv. tests/test_demo_results.py asserts on it; docs/real_photos.md reports it for DogFaceNet.

Usage: ``python benchmarks/noise_check.py WORKDIR DATA_ROOT [--noise 1e-6] [--seeds 3]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.baseline import cosine_scorer, nearest_neighbour
from workflow.calibration import IsotonicCalibrator
from workflow.cascade_auto import choose_cascade
from workflow.metrics import score_predictions
from workflow.pair_stage import predict_stage, pseudo_pairs_table
from workflow.rerank import choose_rerank, rerank_scores
from workflow.stage_io import read_tsv
from workflow.thresholds import choose_threshold, scorer_pseudo_table
from workflow.wildfusion import choose_source, fit_calibrator, fuse

PAIR_STAGES = ("wildfusion", "rerank")
TRAINED = ("xgboost", "dual_backbone")


def _perturb(values: np.ndarray, noise: float, rng: np.random.Generator | None) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if rng is None or noise == 0:
        return values
    return values * (1.0 + noise * rng.standard_normal(values.shape))


def _grid_position(curve: pd.DataFrame, threshold: float) -> int:
    """Index of ``threshold`` on the grid of a tuning curve (the grid point at or just below it)."""
    return int(np.searchsorted(curve["threshold"].to_numpy(np.float64), threshold, side="right") - 1)


def _query_score(preds: pd.DataFrame, solution: pd.DataFrame | None) -> float | None:
    if solution is None:
        return None
    truth = solution.set_index("image_id").loc[preds["image_id"]]
    return score_predictions(truth["identity"].to_numpy(object), preds["identity"].to_numpy(object),
                             truth["new"].to_numpy(bool))["score"]  # fmt: skip


def decisions(
    work: Path, dataset: str, solution: pd.DataFrame | None, noise: float, seed: int | None, backbone: str = "lite0"
) -> dict:
    """Every gallery-tuned decision of ``dataset`` redone from the run in ``work`` (inputs perturbed if ``seed``)."""
    rng = None if seed is None else np.random.default_rng(seed)
    stages = work / "results" / "stages"
    meta = read_tsv(work / "results" / "data" / f"{dataset}.tsv")
    out: dict = {}
    tuning = json.loads((stages / "baseline" / dataset / "threshold.json").read_text()).get("tuning")
    pseudo: dict[str, pd.DataFrame] = {}
    emb_file = next((work / "results" / "embeddings" / dataset / backbone).glob("*.npz"), None)
    if emb_file is not None and tuning:
        with np.load(emb_file, allow_pickle=False) as z:
            ids, emb = z["image_id"].astype(str), _perturb(z["embeddings"], noise, rng)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        row = {i: r for r, i in enumerate(ids)}
        gal, qry = meta[meta["split"] == "database"], meta[meta["split"] == "query"]
        g_emb, g_ids = emb[[row[i] for i in gal["image_id"]]], gal["identity"].to_numpy(object)
        threshold, _, curve = choose_threshold("auto", dataset, cosine_scorer(g_emb, g_ids), g_ids, tuning)
        out["baseline"] = {"threshold": threshold, "position": _grid_position(curve, threshold)}
        nn, top = nearest_neighbour(emb[[row[i] for i in qry["image_id"]]], g_emb)
        preds = pd.DataFrame({"image_id": qry["image_id"].to_numpy(),
                              "identity": np.where(top >= threshold, g_ids[nn], "new_individual")})  # fmt: skip
        out["baseline"]["score"] = _query_score(preds, solution)
        pseudo["baseline"] = scorer_pseudo_table(cosine_scorer(g_emb, g_ids), gal["image_id"].to_numpy(object), g_ids,
                                                 tuning)  # fmt: skip
    wf_file = stages / "wildfusion" / dataset / "pairs.parquet"
    if wf_file.is_file():
        table = pd.read_parquet(wf_file)
        pairs = table[["query", "candidate", "kind"]]
        raw = pd.DataFrame({c[4:]: _perturb(table[c], noise, rng) for c in table.columns if c.startswith("raw_")})
        identity = dict(zip(meta["image_id"], meta["identity"]))
        cals = {s: fit_calibrator(pairs, raw[s].to_numpy(), identity) for s in raw.columns if s != "trained"}
        info_file = json.loads((stages / "wildfusion" / dataset / "threshold.json").read_text())
        if "trained" in raw.columns:
            cal_file = next((work / "results" / "calibration" / dataset / "trained").glob("*.json"))
            cals["trained"] = IsotonicCalibrator.load(cal_file)
        sources = list(raw.columns)
        fused = fuse(raw[sources], cals, {})
        for name in ("trained", "lnbnn"):  # the auto sources, in the order the fuse job decides them
            if name in raw.columns and name in info_file:
                without = [s for s in sources if s != name]
                fused, choice = choose_source(name, meta, pairs, fused, fuse(raw[without], cals, {}), tuning)
                sources = sources if choice["used"] else without
                out[f"{name}_used"] = choice["used"]
        fused = fused["fused"].to_numpy()
        preds, info, curve = predict_stage(meta, pairs, fused, "auto", tuning, dataset)
        out["wildfusion"] = {"threshold": info["threshold"], "position": _grid_position(curve, info["threshold"]),
                             "score": _query_score(preds, solution)}  # fmt: skip
        pseudo["wildfusion"] = pseudo_pairs_table(meta, pairs, fused, tuning)
        reranked, _ = rerank_scores(pairs, fused, 20, 6, 0.1)
        applied, _ = choose_rerank(meta, pairs, fused, reranked, tuning)
        score = reranked if applied else fused
        preds, info, curve = predict_stage(meta, pairs, score, "auto", tuning, dataset)
        out["rerank"] = {"applied": applied, "threshold": info["threshold"],
                         "position": _grid_position(curve, info["threshold"]), "score": _query_score(preds, solution)}
        pseudo["rerank"] = pseudo_pairs_table(meta, pairs, score, tuning)
    for stage in TRAINED:
        path = stages / stage / dataset / "pseudo.parquet"
        if path.is_file():
            t = pd.read_parquet(path)
            pseudo[stage] = t.assign(score=_perturb(t["score"].to_numpy(), noise, rng))
    if len(pseudo) > 1:
        steps, _ = choose_cascade(pseudo)
        out["cascade"] = steps
    return out


def _same_steps(a: list[dict], b: list[dict]) -> bool:
    """Same sources, step kinds and agreement partners (thresholds compared separately)."""
    shape = [[(k, v if k in ("source", "agree_with") else None) for k, v in sorted(s.items())] for s in a]
    return shape == [[(k, v if k in ("source", "agree_with") else None) for k, v in sorted(s.items())] for s in b]


def compare(base: dict, noisy: dict) -> dict:
    """How far each decision moved: grid steps for thresholds, flags for on/off and cascade choices, score change."""
    moved: dict = {}
    for stage in ("baseline", "wildfusion", "rerank"):
        if stage in base:
            moved[f"{stage}_steps"] = abs(base[stage]["position"] - noisy[stage]["position"])
            if base[stage].get("score") is not None:
                moved[f"{stage}_score"] = abs(base[stage]["score"] - noisy[stage]["score"])
    if "rerank" in base:
        moved["rerank_flipped"] = base["rerank"]["applied"] != noisy["rerank"]["applied"]
    for name in ("trained", "lnbnn"):
        if f"{name}_used" in base:
            moved[f"{name}_flipped"] = base[f"{name}_used"] != noisy[f"{name}_used"]
    if "cascade" in base:
        moved["cascade_changed"] = not _same_steps(base["cascade"], noisy["cascade"])
    return moved


def check(work: Path, data_root: Path, noise: float = 1e-6, seeds: int = 3, backbone: str = "lite0") -> pd.DataFrame:
    """One row per (dataset, seed) with :func:`compare` of the perturbed decisions against the unperturbed ones."""
    solution_file = data_root / "solution.csv"
    solution = None
    if solution_file.is_file():
        solution = pd.read_csv(solution_file, dtype=str, keep_default_na=False)
        solution["new"] = solution["new"].str.strip().str.lower().isin(["true", "1", "yes"])
    rows = []
    for path in sorted((work / "results" / "data").glob("*.tsv")):
        dataset = path.stem
        if not (work / "results" / "stages" / "baseline" / dataset / "threshold.json").is_file():
            continue  # a dataset without a gallery has no gallery-tuned decision
        base = decisions(work, dataset, solution, 0.0, None, backbone)
        for seed in range(seeds):
            noisy = decisions(work, dataset, solution, noise, seed, backbone)
            rows.append({"dataset": dataset, "seed": seed, **compare(base, noisy)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="the run's working directory (holds results/)")
    parser.add_argument("data_root", type=Path, help="its data folder (solution.csv for the score changes)")
    parser.add_argument("--noise", type=float, default=1e-6, help="relative noise (default 1e-6)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backbone", default="lite0", help="the baseline's backbone (config baseline.backbone)")
    args = parser.parse_args(argv)
    table = check(args.work, args.data_root, args.noise, args.seeds, args.backbone)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
