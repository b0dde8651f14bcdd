"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DOGFACENET = SHARED / "datasets" / "dogfacenet"


def schema_part(*path: str) -> dict:
    """The part of config/schema.yaml at ``path`` (e.g. ``"properties", "cascade"`` or ``"$defs", "cascade_step"``)
    with the schema's ``$defs``, so that its references resolve: what a config value is validated against."""
    import yaml

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text(encoding="utf-8"))
    part = schema
    for key in path:
        part = part[key]
    return {"$defs": schema["$defs"], **part}


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for model tests (cpu or cuda)")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device(request):
    return request.config.getoption("--device")


def write_image(path: Path, size=(48, 40), mode="RGB", seed=0) -> Path:
    """A small textured image of any PIL mode."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode == "I;16":
        img = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path


def write_dataset(root: Path, rows: list[dict], solution: list[dict] | None = None) -> Path:
    """Write a tiny AnimalCLEF-layout dataset; rows need image_id/identity/split/dataset."""
    import pandas as pd

    full = []
    for i, row in enumerate(rows):
        row = {"date": "", "orientation": "", "species": "dog", **row}
        row.setdefault("path", f"images/{row['dataset']}/{row['split']}/{row['image_id']}.png")
        if row.get("write", True):
            write_image(root / row["path"], seed=i)
        row.pop("write", None)
        full.append(row)
    cols = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
    pd.DataFrame(full)[cols].to_csv(root / "metadata.csv", index=False)
    if solution is not None:
        pd.DataFrame(solution).to_csv(root / "solution.csv", index=False)
    return root
