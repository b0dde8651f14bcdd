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
from workflow.pair_stage import (
    COSINE,
    gallery_labels,
    predict_stage,
    pseudo_pairs_table,
    simulated_scores,
    source_scores,
)
from workflow.robust import prefer_simpler
from workflow.shortlist import read_pairs
from workflow.stage_io import read_tsv, write_parquet, write_stage_outputs

logger = logging.getLogger(__name__)

TRAINED = "trained"  # the dual-backbone similarity as a fusion source (workflow.dual_backbone.heldout)
LNBNN = "lnbnn"  # the one-vs-many LNBNN score of the candidate's individual (workflow.lnbnn)


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
