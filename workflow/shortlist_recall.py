"""Recall@K of a dataset's query shortlist over the known queries of ``solution.csv``.

Inputs
    ``results/shortlist/<dataset>/<key>.parquet`` (workflow/shortlist.py), ``results/data/<dataset>.tsv`` and
    the data's ``solution.csv``.
Outputs
    ``results/shortlist/<dataset>/<key>.recall.json``: ``k, known_queries, recall``, the share of known queries
    whose individual appears among their candidates (an upper bound for every later stage).

A rule of its own, so that adding or editing the answer key reruns this small job and not the shortlist.
"""

from __future__ import annotations

import argparse
import logging

from workflow.cli import arg, run_stage, stage_parser
from workflow.data import read_table
from workflow.shortlist import read_pairs, shortlist_recall
from workflow.stage_io import read_tsv, write_json

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    recall = shortlist_recall(read_pairs(args.pairs), read_tsv(args.metadata), read_table(args.solution))
    logger.info(
        "shortlist recall@%d over %d known queries: %.3f", recall["k"], recall["known_queries"], recall["recall"]
    )
    write_json(recall, args.out)


def main(argv: list[str] | None = None) -> None:
    run_stage(stage_parser(__doc__, arg("--pairs", required=True), "metadata solution out log"), argv, run)


if __name__ == "__main__":
    main()
