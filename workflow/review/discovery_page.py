"""Entry point of rule ``review_discovery``: ``results/review/discovery/<dataset>.html``, one card per individual
that discovery found (a cluster of query photos not anchored to a known individual).

A person confirms a cluster as a new individual (and names it), splits a photo off (it stays a query), merges
clusters (the same name), or marks one not sure. The page downloads the same CSV as the review page
(:mod:`workflow.review.page`): each confirmed photo a ``new`` decision named after its cluster, so
``snakemake enroll`` makes each confirmed cluster a gallery individual.

    python -m workflow.review.discovery_page --dataset D --metadata T.tsv --clusters C.tsv --settings JSON \
        --out D.html
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from workflow.cli import arg, run_stage, stage_parser
from workflow.review.images import thumbnail
from workflow.review.render import render_page
from workflow.stage_io import atomic_path, read_tsv

logger = logging.getLogger(__name__)

DEFAULTS = {"thumbnail": 160, "jpeg_quality": 75, "gallery_version": 0}


def discovery_data(dataset: str, meta: pd.DataFrame, clusters: pd.DataFrame, settings: dict) -> dict:
    """The page's data: the discovered clusters (largest first, then by name), their photos and thumbnails."""
    s = {**DEFAULTS, **settings}
    anchored = clusters["anchored"].astype(str).str.lower().isin(["true", "1"]) if "anchored" in clusters else False
    found = clusters.loc[~anchored, ["image_id", "cluster"]].astype(str)
    meta = meta.assign(image_id=meta["image_id"].astype(str))
    paths = dict(zip(meta["image_id"], meta["abspath"]))
    about = {}
    for column in ("date", "orientation"):
        if column in meta:
            for image_id, value in zip(meta["image_id"], meta[column].fillna("").astype(str)):
                if value:
                    about[image_id] = f"{about[image_id]} · {value}" if image_id in about else value
    sizes = found.groupby("cluster")["image_id"].size()
    order = sorted(sizes.index, key=lambda c: (-int(sizes[c]), c))
    groups = {c: sorted(part["image_id"]) for c, part in found.groupby("cluster")}
    cards = [{"cluster": c, "photos": groups[c]} for c in order]
    images, files = {}, {}
    for image_id in found["image_id"]:
        if image_id in paths:
            images[image_id] = thumbnail(paths[image_id], s["thumbnail"], s["jpeg_quality"])
            files[image_id] = Path(paths[image_id]).resolve().as_uri()
    run = json.dumps([dataset, int(s["gallery_version"]), found.sort_values("image_id").to_csv(index=False)])
    return {
        "dataset": dataset,
        "run_id": hashlib.sha1(run.encode()).hexdigest()[:12],
        "gallery_version": int(s["gallery_version"]),
        "thumbnail": int(s["thumbnail"]),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cards": cards,
        "images": images,
        "files": files,
        "about": {k: v for k, v in about.items() if k in images},
    }


def write_page(args: argparse.Namespace) -> None:
    settings = {k: v for k, v in json.loads(args.settings).items() if k in DEFAULTS}
    data = discovery_data(args.dataset, read_tsv(args.metadata), read_tsv(args.clusters), settings)
    page = render_page(data, args.dataset, "discovery.html")
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    logger.info("%s: %d discovered individuals, %d photos, %.1f kB", args.dataset, len(data["cards"]),
                len(data["images"]), len(page.encode()) / 1024)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    clusters = arg("--clusters", required=True, help="discovery clusters.tsv")
    settings = arg("--settings", default="{}", help="JSON: config review")
    run_stage(stage_parser(__doc__, "dataset", "metadata", clusters, settings, "out", "log"), argv, write_page)


if __name__ == "__main__":
    main()
