"""Write a fake AnimalCLEF 2025 ``metadata.csv`` of the paper's size, without images.

Output
    ``<out>/metadata.csv`` with the AnimalCLEF columns and 13,074 database + 2,135 query rows over three
    datasets (LynxID2025 2,957 / 946, SalamanderID2025 1,388 / 689, SeaTurtleID2022 8,729 / 500) with
    77 / 587 / 438 gallery identities. The image paths point nowhere: the file is only for planning the
    workflow (dry-runs, job counts, resource requests), never for running it.

Usage
    python benchmarks/make_paper_metadata.py OUT_DIR
    snakemake -n --profile profiles/slurm --configfile config/animalclef2025.yaml --config data_root=OUT_DIR
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]


@dataclass(frozen=True)
class DatasetSize:
    """Row counts of one dataset of the AnimalCLEF 2025 test set."""

    name: str
    species: str
    database: int
    query: int
    identities: int
    orientations: tuple[str, ...]


PAPER_SIZES = (
    DatasetSize("LynxID2025", "lynx", 2957, 946, 77, ("left", "right", "front", "back", "unknown")),
    DatasetSize("SalamanderID2025", "salamander", 1388, 689, 587, ("top", "left", "right", "bottom")),
    DatasetSize("SeaTurtleID2022", "loggerhead turtle", 8729, 500, 438, ("left", "right", "top", "front")),
)


def paper_rows(sizes=PAPER_SIZES, seed: int = 0) -> list[dict[str, str]]:
    """Metadata rows: every identity has at least one database image, queries have no identity."""
    rng = np.random.default_rng(seed)
    rows = []
    for ds in sizes:
        if ds.identities > ds.database:
            raise ValueError(f"{ds.name}: {ds.identities} identities need at least as many database rows")
        # each identity once, the rest long-tailed (Zipf-like) as in the real data
        weights = 1.0 / np.arange(1, ds.identities + 1)
        extra = rng.choice(ds.identities, size=ds.database - ds.identities, p=weights / weights.sum())
        owners = np.concatenate([np.arange(ds.identities), extra])
        rng.shuffle(owners)
        for split, owner_list in (("database", owners), ("query", [None] * ds.query)):
            for owner in owner_list:
                image_id = str(len(rows))
                rows.append(
                    {
                        "image_id": image_id,
                        "identity": "" if owner is None else f"{ds.name}_{owner:04d}",
                        "path": f"images/{ds.name}/{split}/{image_id}.jpg",
                        "date": "",
                        "orientation": str(rng.choice(ds.orientations)),
                        "species": ds.species,
                        "split": split,
                        "dataset": ds.name,
                    }
                )
    return rows


def write_paper_metadata(out: str | Path, seed: int = 0) -> Path:
    """Write ``out/metadata.csv`` (creating ``out``) and return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metadata.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(paper_rows(seed=seed))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write metadata.csv into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_paper_metadata(args.out, seed=args.seed)
    print(path)


if __name__ == "__main__":
    main()
