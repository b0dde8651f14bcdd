"""Entry point of rule ``review``: write ``results/review/<dataset>.html``, the review page of one dataset.

Inputs
    ``results/data/<dataset>.tsv``; ``results/stages/wildfusion/<dataset>/pairs.parquet`` and ``threshold.json``
    (candidates, calibrated fused scores, the threshold); the submitted stage's ``predictions.tsv`` (the decision
    and, from the cascade, ``decided_by``); every stage's ``predictions.tsv`` (do the stages agree?); discovery's
    ``clusters.tsv`` when discovery runs; the feature manifest of one matcher (the match lines of each query's
    shown candidates, from the per-image feature cache).
Outputs
    one self-contained HTML page (the cards' thumbnails embedded as base64 JPEG; the other gallery photos of a
    candidate individual, shown on demand, linked to their files) and a TSV of the cards' order and scores
    (``--table``, :data:`workflow.review.cards.REVIEW_COLUMNS`).

    python -m workflow.review.page --dataset D --metadata T.tsv --pairs P.parquet --threshold W.json \
        --decision S.tsv --decider J.json --stages NAME=predictions.tsv ... [--clusters C.tsv] --matcher M --conf JSON \
        --features F.tsv --settings JSON --out D.html --table D.tsv
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path

import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.cli import arg, named_paths, run_stage, stage_parser
from workflow.data import read_table
from workflow.device import with_device
from workflow.review.cards import card_records, lazy_lines, review_table, top_candidates
from workflow.review.images import match_lines, thumbnail
from workflow.review.render import render_page
from workflow.stage_io import atomic_path, read_json, read_tsv, write_tsv

logger = logging.getLogger(__name__)

# Settings of config ``review`` that shape the page (the schema holds their defaults and descriptions).
DEFAULTS = {"top_k": 5, "band": 0.1, "max_queries": None, "thumbnail": 160, "jpeg_quality": 75, "match_lines": 40,
            "uncertain_share": 0.2, "match_candidates": 5, "gallery_version": 0}  # fmt: skip


def run_id(dataset: str, meta: pd.DataFrame, decision: pd.DataFrame, gallery_version: int) -> str:
    """12 hex naming what the page's decisions are about: the dataset, its photos (ids, splits, identities and
    image sha1 when the table has them), the gallery version and the decisions shown. The page keeps its
    decisions under it, so pages of other data or another run never share them (a rewritten page of the same run
    keeps them)."""
    columns = [c for c in ("image_id", "split", "identity", "sha1") if c in meta]
    photos = meta[columns].astype(str).sort_values("image_id").to_csv(index=False)
    decided = decision[["image_id", "identity"]].astype(str).sort_values("image_id").to_csv(index=False)
    text = json.dumps([dataset, int(gallery_version), photos, decided])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def gallery_photos(meta: pd.DataFrame, identities: set[str]) -> dict[str, list[str]]:
    """``{identity: its gallery photos}`` (in table order) of each of ``identities`` with more than one: what a
    card's *more* control shows of a candidate individual."""
    gallery = meta[(meta["split"] == "database") & meta["identity"].astype(str).isin(identities)]
    photos = gallery.groupby(gallery["identity"].astype(str), sort=True)["image_id"].agg(list)
    return {identity: ids for identity, ids in photos.items() if len(ids) > 1}


def page_data(
    dataset: str,
    stage: str,
    meta: pd.DataFrame,
    pairs: pd.DataFrame,
    threshold: float,
    decision: pd.DataFrame,
    stages: dict[str, pd.DataFrame],
    clusters: pd.DataFrame | None,
    lines_for,
    settings: dict,
    decider: dict | None = None,
) -> tuple[dict, pd.DataFrame]:
    """The page's data (cards, thumbnails) and the review table.

    ``lines_for(pairs: list[(query, candidate)]) -> {(query, candidate): lines}`` draws the match lines (see
    :func:`workflow.review.images.match_lines`) of each query's best pair and of its first ``match_candidates``
    shown candidates. ``decider``: the submitted stage's ``threshold.json``, or the
    cascade's ``choice.json`` (the thresholds of the step that decided each query, in the card's words).
    """
    s = {**DEFAULTS, **settings}
    meta = meta.assign(image_id=meta["image_id"].astype(str))
    review = review_table(pairs, meta, decision, stages, threshold, clusters, s["band"], s["uncertain_share"])
    if s["max_queries"] is not None and len(review) > s["max_queries"]:
        logger.info("%s: %d queries, the page shows the %d of highest priority", dataset, len(review), s["max_queries"])
        review = review.head(s["max_queries"])
    candidates = top_candidates(pairs, meta, s["top_k"])
    candidates = candidates[candidates["query"].isin(review["image_id"])]
    best = [(q, c) for q, c in zip(review["image_id"], review["best_candidate"]) if c]
    matched = candidates[candidates["rank"] <= s["match_candidates"]]
    wanted = list(dict.fromkeys([*best, *zip(matched["query"], matched["candidate"])]))
    lines = lines_for(wanted) if s["match_lines"] > 0 else {}
    paths = dict(zip(meta["image_id"], meta["abspath"]))
    shown = set(review["image_id"]) | set(candidates["candidate"])
    more = gallery_photos(meta, set(candidates["identity"]))
    images, files, about = {}, {}, {}
    orientation, date = ({} if c not in meta else dict(zip(meta["image_id"], meta[c].fillna("").astype(str)))
                         for c in ("orientation", "date"))  # fmt: skip
    for image_id in dict.fromkeys([*review["image_id"], *candidates["candidate"], *chain(*more.values())]):
        words = [w for w in (date.get(image_id, ""), orientation.get(image_id, "")) if w]
        if words:
            about[image_id] = " · ".join(words)
        if image_id in paths:
            if image_id in shown:  # a card's photo: embedded; an individual's other photos: from their files
                images[image_id] = thumbnail(paths[image_id], s["thumbnail"], s["jpeg_quality"])
            files[image_id] = Path(paths[image_id]).resolve().as_uri()  # the full-resolution file
    data = {
        "dataset": dataset,
        "run_id": run_id(dataset, meta, decision, s["gallery_version"]),
        "stage": stage,
        "threshold": float(threshold),
        "band": float(s["band"]),
        "new_label": NEW_INDIVIDUAL,
        "gallery_version": int(s["gallery_version"]),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "thumbnail": int(s["thumbnail"]),
        "cards": card_records(review, candidates, stages, lines, stage, decider),
        "lazy": {"lines": lazy_lines(review, lines)},  # a block of its own, parsed on demand (render_page)
        "images": images,
        "gallery": more,
        "files": files,
        "about": about,
    }
    return data, review


def write_page(args: argparse.Namespace) -> None:
    """The review page and its table of one dataset."""

    settings = {k: v for k, v in json.loads(args.settings).items() if k in DEFAULTS}
    conf = with_device(args.matcher, json.loads(args.conf), args.device)
    manifest = read_tsv(args.features)
    stages = {name: read_tsv(path) for name, path in named_paths(args.stages, "stages").items() if name != args.stage}
    clusters = read_tsv(args.clusters) if args.clusters else None
    meta = read_tsv(args.metadata)
    if args.data_root and (Path(args.data_root) / "metadata.csv").is_file():  # dates (not in the tables)
        dates = read_table(Path(args.data_root) / "metadata.csv")
        if "date" in dates:
            meta["date"] = meta["image_id"].astype(str).map(dict(zip(dates["image_id"], dates["date"]))).fillna("")
    data, review = page_data(
        args.dataset,
        args.stage,
        meta,
        pd.read_parquet(args.pairs),
        float(read_json(args.threshold)["threshold"]),
        read_tsv(args.decision),
        stages,
        clusters,
        lambda pairs: match_lines(manifest, args.matcher, conf, pairs, settings.get("match_lines", 40)),
        settings,
        read_json(args.decider) if args.decider else {},
    )
    page = render_page(data, args.dataset)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    write_tsv(review, args.table)
    logger.info(
        "%s: %d cards (%d uncertain), %d thumbnails, %.1f kB",
        args.dataset,
        len(data["cards"]),
        int(review["uncertain"].sum()),
        len(data["images"]),
        len(page.encode()) / 1024,
    )


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(
        __doc__, "dataset",
        arg("--stage", required=True, help="the submitted stage (whose predictions are the decisions)"),
        "metadata", arg("--pairs", required=True, help="WildFusion pairs.parquet"),
        arg("--threshold", required=True, help="WildFusion threshold.json"),
        arg("--decision", required=True, help="predictions.tsv of the submitted stage"),
        arg("--data-root", default="", help="the data folder (the date column of its metadata.csv)"),
        arg("--decider", default="", help="threshold.json of the submitted stage, choice.json of the cascade"),
        arg("--stages", nargs="*", default=[], help="NAME=predictions.tsv of every stage run"),
        arg("--clusters", default="", nargs="?", const="", help="discovery clusters.tsv (absent: none)"),
        arg("--matcher", required=True),
        arg("--conf", required=False, default="{}", help="JSON options of the matcher"),
        arg("--features", required=True, help="feature manifest of the matcher"), arg("--device", default="cpu"),
        arg("--settings", default="{}", help="JSON: config review"), "out", arg("--table", required=True), "log",
    )  # fmt: skip
    run_stage(parser, argv, write_page)


if __name__ == "__main__":
    main()
