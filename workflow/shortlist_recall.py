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

from workflow.cli import setup_logging
from workflow.data import read_table
from workflow.shortlist import read_pairs, shortlist_recall
from workflow.stage_io import read_tsv, write_json

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--solution", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    recall = shortlist_recall(read_pairs(args.pairs), read_tsv(args.metadata), read_table(args.solution))
    logger.info(
        "shortlist recall@%d over %d known queries: %.3f", recall["k"], recall["known_queries"], recall["recall"]
    )
    write_json(recall, args.out)


if __name__ == "__main__":
    main()
