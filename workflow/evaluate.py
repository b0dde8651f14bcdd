"""Scoring, the ablation table and the submission.

Subcommands (each called by one rule):

``score``       per-dataset predictions of one stage -> ``results/stages/<stage>/scores.tsv`` (scored against
                ``solution.csv`` when the data has one; otherwise only ``new_share`` is filled).
``table``       stage score tables -> ``results/scores.tsv`` (columns ``stage, dataset, BAKS, BAUS, score,
                new_share``, one ``dataset=ALL`` row per stage, stages in the configured order).
``submission``  the final stage's predictions -> ``results/submission.csv`` (``image_id,identity``, each
                query image exactly once, checked against the metadata); the queries of a dataset without a
                gallery (``--no-gallery`` tables: no stage identifies them) are all ``new_individual``.

Only the datasets whose tables are given are scored (the per-query stages skip datasets without a gallery).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.cli import arg, command, run_stage, stage_parser
from workflow.data import read_table
from workflow.metrics import SCORE_COLUMNS, score_table
from workflow.stage_io import atomic_path, read_tsv, write_tsv

logger = logging.getLogger(__name__)


def concat_predictions(paths: list[str]) -> pd.DataFrame:
    return pd.concat([read_tsv(p) for p in paths], ignore_index=True)


def unscored_table(stage: str, predictions: pd.DataFrame, datasets: list[str], metadata: pd.DataFrame) -> pd.DataFrame:
    """Score rows without a solution: only the share of ``new_individual`` predictions is known."""
    ds_of = dict(zip(metadata["image_id"], metadata["dataset"]))
    dataset = predictions["image_id"].map(ds_of)
    rows = []
    for name in [*datasets, "ALL"]:
        part = predictions if name == "ALL" else predictions[dataset == name]
        share = float(np.mean(part["identity"] == NEW_INDIVIDUAL)) if len(part) else float("nan")
        rows.append(
            {"stage": stage, "dataset": name, "BAKS": np.nan, "BAUS": np.nan, "score": np.nan, "new_share": share}
        )
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def check_submission(sub: pd.DataFrame, query_ids: list[str], gallery_identities: set[str]) -> None:
    """Each query image exactly once; every identity a database identity or ``new_individual``."""
    dup = sub["image_id"][sub["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"submission lists {dup.iloc[0]!r} more than once")
    missing = sorted(set(query_ids) - set(sub["image_id"]))
    extra = sorted(set(sub["image_id"]) - set(query_ids))
    if missing or extra:
        raise ValueError(
            f"submission misses {len(missing)} query image(s) {missing[:3]} and has {len(extra)} extra {extra[:3]}"
        )
    bad = sorted(set(sub["identity"]) - gallery_identities - {NEW_INDIVIDUAL})
    if bad:
        raise ValueError(f"submission predicts identities that are not in the database: {bad[:5]}")


def score_stage(args: argparse.Namespace) -> None:
    """``score``: the stage's scores per dataset (unscored rows without solution.csv)."""
    preds = concat_predictions(args.predictions)
    meta = pd.concat([read_tsv(m) for m in args.metadata], ignore_index=True)
    if args.solution and Path(args.solution).is_file():
        solution = read_table(args.solution)
        # photos enrolled into the gallery (workflow/enrollment.py) are no longer queries: not scored
        queries = set(meta.loc[meta["split"] == "query", "image_id"].astype(str))
        table = score_table(args.stage, preds, solution[solution["image_id"].isin(queries)])
    else:
        table = unscored_table(args.stage, preds, sorted(meta["dataset"].unique()), meta)
    logger.info("%s\n%s", args.stage, table.to_string(index=False))
    write_tsv(table, args.out)


def scores_table(args: argparse.Namespace) -> None:
    """``table``: every stage's scores in one table."""
    scores = pd.concat([read_tsv(s) for s in args.scores], ignore_index=True)[SCORE_COLUMNS]
    logger.info("\n%s", scores.to_string(index=False))
    write_tsv(scores.round(6), args.out)


def submission_rows(predictions: list[str], no_gallery: list[str]) -> pd.DataFrame:
    """``image_id, identity`` of the predicted queries, then ``new_individual`` for every query of the
    ``no_gallery`` tables (datasets without a gallery: nothing known to match)."""
    parts = [concat_predictions(predictions)[["image_id", "identity"]]] if predictions else []
    for table in no_gallery:
        meta = read_tsv(table)
        parts.append(pd.DataFrame({"image_id": meta.loc[meta["split"] == "query", "image_id"],
                                   "identity": NEW_INDIVIDUAL}))  # fmt: skip
    if not parts:
        return pd.DataFrame(columns=["image_id", "identity"])
    return pd.concat(parts, ignore_index=True)


def write_submission(args: argparse.Namespace) -> None:
    """``submission``: the submitted stage's predictions of every dataset (``new_individual`` for every query of
    a dataset without a gallery), checked, in metadata order."""
    preds = submission_rows(args.predictions, args.no_gallery)
    meta = pd.concat([read_tsv(m) for m in [*args.metadata, *args.no_gallery]], ignore_index=True)
    query_ids = meta.loc[meta["split"] == "query", "image_id"].tolist()
    check_submission(preds, query_ids, set(meta.loc[meta["split"] == "database", "identity"]))
    order = {image_id: i for i, image_id in enumerate(meta["image_id"])}
    preds = preds.sort_values("image_id", key=lambda s: s.map(order))
    with atomic_path(args.out) as tmp:
        preds.to_csv(tmp, index=False)
    logger.info("wrote %s: %d rows, %.1f%% new_individual", args.out, len(preds),
                100 * float(np.mean(preds["identity"] == NEW_INDIVIDUAL)) if len(preds) else 0.0)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    predictions = arg("--predictions", nargs="+", required=True)
    commands = {
        "score": command(None, arg("--stage", required=True), predictions,
                         arg("--metadata", nargs="+", help="validated per-dataset tables"),
                         arg("--solution", required=False, default="", nargs="?", const="",
                             help="solution.csv (absent: not scored)"), "out"),
        "table": command(None, arg("--scores", nargs="+", required=True), "out"),
        "submission": command(None, arg("--predictions", nargs="*", default=[]),
                              arg("--metadata", nargs="*", default=[], help="tables of the datasets with predictions"),
                              arg("--no-gallery", nargs="*", default=[],
                                  help="tables of the datasets without a gallery"), "out"),
    }  # fmt: skip
    run_stage(stage_parser(__doc__, "log", commands=commands), argv, {"score": score_stage, "table": scores_table,
                                                                     "submission": write_submission})  # fmt: skip


if __name__ == "__main__":
    main()
