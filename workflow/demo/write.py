"""Writing the demo dataset in the AnimalCLEF 2025 layout: images, ``metadata.csv`` and ``solution.csv``."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workflow.demo.plan import _IDENTITY, _PHOTO, DemoDataset, _key, plan_dataset
from workflow.demo.render import _encode_jpeg, render_canonical, render_individual_image
from workflow.demo.shapes import make_identity
from workflow.stage_io import atomic_path

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
SOLUTION_COLUMNS = ["image_id", "identity", "dataset", "new"]


def generate_demo(
    out_dir: str | Path, datasets: list[DemoDataset], seed: int, image_size: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the demo under ``out_dir`` and return ``(metadata (N x 8), solution (Q x 4))``.

    ``image_id`` runs 0..N-1 over the datasets in order (database photos first, then query photos, each
    in random order, so ids reveal nothing). An existing metadata.csv/solution.csv is removed first and
    both are rewritten last; ``images/<dataset>/`` of each generated dataset is replaced.
    """
    if not datasets:
        raise ValueError("generate_demo: no datasets given")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"generate_demo: dataset names must be unique, got {names}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"generate_demo: image_size must be an integer >= 32, got {image_size!r}")
    out = Path(out_dir)
    for name in ("metadata.csv", "solution.csv"):
        (out / name).unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    solution: list[dict[str, Any]] = []
    next_id = 0
    for ds in datasets:
        start = time.perf_counter()
        plan = plan_dataset(ds, seed)
        key = _key(ds.name)
        n_total = ds.known_individuals + ds.new_individuals
        identities = [
            make_identity(ds.pattern, np.random.default_rng([seed, key, _IDENTITY, i])) for i in range(n_total)
        ]
        canonicals: dict[int, np.ndarray] = {}
        shutil.rmtree(out / "images" / ds.name, ignore_errors=True)  # no stale photos of an earlier run
        for split in ("database", "query"):
            (out / "images" / ds.name / split).mkdir(parents=True, exist_ok=True)
        for j, row in enumerate(plan.itertuples(index=False)):
            ind = int(row.individual)
            if ind not in canonicals:
                canonicals[ind] = render_canonical(identities[ind], image_size)
            rgb = render_individual_image(
                identities[ind],
                np.random.default_rng([seed, key, _PHOTO, j]),
                image_size,
                orientation=row.orientation,
                canonical=canonicals[ind],
            )
            image_id = next_id
            next_id += 1
            rel = f"images/{ds.name}/{row.split}/{image_id}.jpg"
            (out / rel).write_bytes(_encode_jpeg(rgb))
            rows.append(
                {
                    "image_id": image_id,
                    "identity": row.identity if row.split == "database" else "",
                    "path": rel,
                    "date": row.date,
                    "orientation": row.orientation,
                    "species": ds.species,
                    "split": row.split,
                    "dataset": ds.name,
                }
            )
            if row.split == "query":
                solution.append(
                    {"image_id": image_id, "identity": row.identity, "dataset": ds.name, "new": bool(row.new)}
                )
        query = plan[plan["split"] == "query"]
        logger.info(
            "%s (%s, %s): %d known + %d new individuals; %d database, %d query photos (%d of new "
            "individuals) in %.1f s",
            ds.name,
            ds.species,
            ds.distribution,
            ds.known_individuals,
            ds.new_individuals,
            int((plan["split"] == "database").sum()),
            len(query),
            int(query["new"].sum()),
            time.perf_counter() - start,
        )
    metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
    solution_df = pd.DataFrame(solution, columns=SOLUTION_COLUMNS)
    with atomic_path(out / "solution.csv") as tmp:
        solution_df.to_csv(tmp, index=False)
    with atomic_path(out / "metadata.csv") as tmp:
        metadata.to_csv(tmp, index=False)
    return metadata, solution_df
