"""WildFusion stage: isotonic calibration of each local matcher and of the global cosine, then fusion.

Subcommands (one rule each):

``calibrate``  labelled gallery pairs -> ``results/calibration/<dataset>/<source>/<key>.json`` for one source (a
               matcher or ``cosine``). The labelled pairs are every gallery image's shortlist of other gallery
               images (``kind == gallery`` in the shortlist, ``k_gallery`` per image): same individual -> 1,
               different -> 0; the counts of each are stored in the artifact and logged.
``fuse``       shortlist + matcher shards + calibrators -> per-pair fused score (mean of the calibrated scores
               of the sources that scored the pair, configurable weights), the prediction of each query (the
               identity of its best-scoring candidate, ``new_individual`` below the dataset's threshold,
               fixed or ``auto`` on the gallery pairs as in :mod:`workflow.thresholds`), and the fused pair
               table reused by later stages; with ``--pseudo`` also ``pseudo.parquet``: the fused scores on the
               simulated open-set splits of the gallery (:func:`workflow.thresholds.pseudo_table`). With
               ``--trained auto`` the source ``trained`` (the dual-backbone similarity) is fused only when that
               raises the simulated open-set score of the gallery (:func:`choose_trained`; ``threshold.json``
               records both scores); ``--lnbnn auto`` decides the same for the source ``lnbnn``
               (:mod:`workflow.lnbnn`), after ``trained``.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np
import pandas as pd

from workflow.calibration import IsotonicCalibrator, fuse_scores
from workflow.cli import arg, command, run_stage, stage_parser
from workflow.match import read_shards
from workflow.robust import prefer_simpler
from workflow.shortlist import read_pairs
from workflow.stage_io import read_tsv, write_parquet, write_stage_outputs
from workflow.thresholds import (
    apply_threshold,
    choose_threshold,
    pair_scorer,
    pseudo_split_scores,
    scorer_pseudo_table,
    top_per_source,
)

logger = logging.getLogger(__name__)

COSINE = "cosine"
TRAINED = "trained"  # the dual-backbone similarity as a fusion source (workflow.dual_backbone.heldout)
LNBNN = "lnbnn"  # the one-vs-many LNBNN score of the candidate's individual (workflow.lnbnn)


def source_scores(pairs: pd.DataFrame, shards: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Raw score columns (``cosine`` plus one per matcher) aligned to the rows of ``pairs``; NaN = not scored."""
    out = pd.DataFrame({COSINE: pairs["cosine"].to_numpy(np.float64)}, index=pairs.index)
    for name, table in sorted(shards.items()):
        dup = table.duplicated(["query", "candidate"])
        if dup.any():
            raise ValueError(
                f"matcher {name!r}: pair {tuple(table.loc[dup, ['query', 'candidate']].iloc[0])} scored twice"
            )
        merged = pairs[["query", "candidate"]].merge(table, on=["query", "candidate"], how="left")
        out[name] = merged["score"].to_numpy(np.float64)
    return out


def gallery_labels(pairs: pd.DataFrame, identity: dict) -> np.ndarray:
    """1 where both images of a pair show the same individual."""
    return (pairs["query"].map(identity) == pairs["candidate"].map(identity)).to_numpy(np.float64)


def fit_calibrator(pairs: pd.DataFrame, raw: np.ndarray, identity: dict) -> IsotonicCalibrator:
    """Fit on the gallery pairs (``kind == gallery``) of ``pairs`` with raw scores ``raw: [P]``."""
    gal = (pairs["kind"] == "gallery").to_numpy()
    return IsotonicCalibrator().fit(raw[gal], gallery_labels(pairs[gal], identity))


def fuse(raw: pd.DataFrame, calibrators: dict[str, IsotonicCalibrator], weights: dict | None) -> pd.DataFrame:
    """Calibrated score per source and the fused score, aligned to ``raw``'s rows."""
    missing = sorted(set(raw.columns) - set(calibrators))
    if missing:
        raise ValueError(f"no calibrator for source(s) {missing}")
    calibrated = pd.DataFrame({name: calibrators[name].predict(raw[name].to_numpy()) for name in raw.columns})
    calibrated.index = raw.index
    return calibrated.assign(fused=fuse_scores(calibrated, weights))


def predict_queries(pairs: pd.DataFrame, score: np.ndarray, query_ids: np.ndarray, identity: dict) -> pd.DataFrame:
    """Best candidate of each query: ``image_id, top_identity, top_score`` (``-inf`` without candidates)."""
    pos = {q: i for i, q in enumerate(query_ids)}
    src = pairs["query"].map(pos).to_numpy()
    rows, best = top_per_source(src, np.asarray(score, float), len(query_ids))
    cand = pairs["candidate"].to_numpy(dtype=object)
    top_identity = np.array([identity[cand[r]] if r >= 0 else "" for r in rows], dtype=object)
    return pd.DataFrame({"image_id": query_ids, "top_identity": top_identity, "top_score": best})


def gallery_scorer(meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray):
    """A :data:`workflow.thresholds.Scorer` over the gallery pairs of ``pairs`` scored by ``score: [P]``.

    Returns ``(scorer, gallery image ids [G], gallery identities [G])`` in table order.
    """
    gal = meta[meta["split"] == "database"]
    gal_ids = gal["image_id"].to_numpy(dtype=object)
    gal_identities = gal["identity"].to_numpy(dtype=object)
    gpos = {g: i for i, g in enumerate(gal_ids)}
    is_g = (pairs["kind"] != "query").to_numpy()
    gp = pairs[is_g]
    scorer = pair_scorer(gp["query"].map(gpos).to_numpy(), gp["candidate"].map(gpos).to_numpy(),
                         np.asarray(score, np.float64)[is_g], gal_identities)  # fmt: skip
    return scorer, gal_ids, gal_identities


def pseudo_pairs_table(meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, tuning: dict) -> pd.DataFrame:
    """The stage's ``pseudo.parquet`` (:func:`workflow.thresholds.scorer_pseudo_table`) from its pair scores."""
    scorer, gal_ids, gal_identities = gallery_scorer(meta, pairs, score)
    return scorer_pseudo_table(scorer, gal_ids, gal_identities, tuning)


def predict_stage(
    meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, threshold_setting, tuning: dict, dataset: str
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Predictions of a pair-scoring stage (WildFusion and the later stages that rescore its pairs)."""
    identity = dict(zip(meta["image_id"], meta["identity"]))
    qry_ids = meta.loc[meta["split"] == "query", "image_id"].to_numpy(dtype=object)
    is_q = (pairs["kind"] == "query").to_numpy()
    preds = predict_queries(pairs[is_q], score[is_q], qry_ids, identity)
    scorer, _, gal_identities = gallery_scorer(meta, pairs, score)
    threshold, info, curve = choose_threshold(threshold_setting, dataset, scorer, gal_identities, tuning)
    preds.insert(
        1, "identity", apply_threshold(preds["top_identity"].to_numpy(), preds["top_score"].to_numpy(), threshold)
    )
    return preds, info, curve


def simulated_scores(meta: pd.DataFrame, pairs: pd.DataFrame, score: np.ndarray, tuning: dict) -> np.ndarray:
    """Per-split simulated open-set scores ``[S]`` of the pair scores ``score: [P]`` at their robust threshold
    (:func:`workflow.thresholds.pseudo_split_scores`) on the gallery's simulated splits (gallery pairs only)."""
    return pseudo_split_scores(pseudo_pairs_table(meta, pairs, score, tuning), int(tuning["grid_size"]))[0]


def choose_trained(
    meta: pd.DataFrame, pairs: pd.DataFrame, with_trained: pd.DataFrame, without: pd.DataFrame, tuning: dict
) -> tuple[pd.DataFrame, dict]:
    """``wildfusion.trained: auto``: fuse the trained source when that raises the simulated open-set score.

    Both fusions are scored by :func:`simulated_scores` on the same splits of the gallery (gallery x gallery pairs,
    whose trained scores are held out: no query truth is read); the source is fused only when it gains more than
    the spread of the per-split difference (:func:`workflow.robust.prefer_simpler`). Returns the chosen fusion
    table and ``{used, with_trained, without_trained, gain, tolerance}``.
    """
    return choose_source(TRAINED, meta, pairs, with_trained, without, tuning)


def choose_source(
    name: str, meta: pd.DataFrame, pairs: pd.DataFrame, with_it: pd.DataFrame, without: pd.DataFrame, tuning: dict
) -> tuple[pd.DataFrame, dict]:
    """An ``auto`` source (``trained``, ``lnbnn``) is fused when it raises the simulated open-set score of the
    gallery (:func:`simulated_scores`, gallery pairs only) by more than the spread of the per-split difference.
    Returns the chosen fusion table and ``{used, with_<name>, without_<name>, gain, tolerance}``."""
    used, report = prefer_simpler(
        simulated_scores(meta, pairs, without["fused"].to_numpy(), tuning),
        simulated_scores(meta, pairs, with_it["fused"].to_numpy(), tuning),
        names=(f"without_{name}", f"with_{name}"),
    )
    return (with_it if used else without), {"used": used, **report}


def calibrate(args: argparse.Namespace) -> None:
    """``calibrate``: the isotonic calibrator of one source on the labelled gallery pairs."""
    meta = read_tsv(args.metadata)
    identity = dict(zip(meta["image_id"], meta["identity"]))
    pairs = read_pairs(args.shortlist)
    shards = {} if args.source == COSINE else {args.source: read_shards(args.shards)}
    raw = source_scores(pairs, shards)[args.source].to_numpy()
    cal = fit_calibrator(pairs, raw, identity)
    logger.info("%s: isotonic fit on %d same- and %d different-individual gallery pairs, %d knots",
                args.source, cal.n_pos, cal.n_neg, len(cal.x))  # fmt: skip
    cal.save(args.out)


def fuse_stage(args: argparse.Namespace) -> None:
    """``fuse``: calibrated sources fused per pair, predictions, threshold and curve of one dataset."""
    meta = read_tsv(args.metadata)
    pairs = read_pairs(args.shortlist)
    by_matcher: dict[str, list[str]] = {m: [] for m in args.matchers}
    for path in args.shards:
        matcher = next((m for m in args.matchers if f"/{m}/" in path), None)
        if matcher is None:
            raise ValueError(f"shard {path} belongs to none of the matchers {args.matchers}")
        by_matcher[matcher].append(path)
    raw = source_scores(pairs, {m: read_shards(paths) for m, paths in by_matcher.items()})
    sources = [COSINE, *args.matchers]
    calibrators = {s: IsotonicCalibrator.load(c) for s, c in zip(sources, args.calibrators)}
    weights, tuning = json.loads(args.weights), json.loads(args.tuning)
    fused = fuse(raw[sources], calibrators, weights)
    choices = {}
    for name, setting in ((TRAINED, args.trained), (LNBNN, args.lnbnn)):
        if setting != "auto" or name not in sources:
            continue
        without = [s for s in sources if s != name]
        fused, choice = choose_source(name, meta, pairs, fused, fuse(raw[without], calibrators, weights), tuning)
        sources = sources if choice["used"] else without
        choices[name] = choice
        verdict = "fused" if choice["used"] else "left out"
        logger.info("%s: %s source %s (simulated open-set score %.4f with it, %.4f without)", args.dataset, name,
                    verdict, choice[f"with_{name}"], choice[f"without_{name}"])  # fmt: skip
    preds, info, curve = predict_stage(
        meta, pairs, fused["fused"].to_numpy(), json.loads(args.threshold), tuning, args.dataset
    )
    info.update(choices)
    parts = [pairs[["query", "candidate", "kind"]], raw.add_prefix("raw_"), fused]
    table = pd.concat([part.reset_index(drop=True) for part in parts], axis=1)
    write_parquet(table, args.pairs_out)
    if args.pseudo:
        write_parquet(pseudo_pairs_table(meta, pairs, fused["fused"].to_numpy(), tuning), args.pseudo)
    write_stage_outputs(args.dataset, preds, info, curve, args.predictions, args.threshold_out, args.curve)


def main(argv: list[str] | None = None) -> None:
    commands = {
        "calibrate": command(None, arg("--source", required=True, help="a matcher name, or 'cosine'"), "shards out"),
        "fuse": command(None, "matchers", arg("--shards", help="every shard of every matcher, in --matchers order"),
                        "calibrators weights dataset threshold tuning predictions threshold-out curve pairs-out",
                        "pseudo", arg("--trained", choices=["fixed", "auto"], default="fixed",
                                      help="fixed: fuse the sources of --matchers; auto: the source 'trained' (when "
                                           "listed there) only where it raises the simulated score"),
                        arg("--lnbnn", choices=["fixed", "auto"], default="fixed",
                            help="the same for the source 'lnbnn' (decided after 'trained')")),
    }  # fmt: skip
    parser = stage_parser(__doc__, "metadata shortlist log", commands=commands)
    run_stage(parser, argv, {"calibrate": calibrate, "fuse": fuse_stage})


if __name__ == "__main__":
    main()
