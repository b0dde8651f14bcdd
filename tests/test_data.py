"""Validation of a dataset in the AnimalCLEF layout: every problem reported at once, by file and line."""

import numpy as np
import pandas as pd
import pytest
from conftest import DOGFACENET, write_dataset, write_image
from PIL import Image

from workflow.data import DataValidationError, validate_dataset
from workflow.images import ImageReadError, load_rgb

ROWS = [
    {"image_id": "g1", "identity": "a", "split": "database", "dataset": "D"},
    {"image_id": "g2", "identity": "a", "split": "database", "dataset": "D"},
    {"image_id": "g3", "identity": "b", "split": "database", "dataset": "D"},
    {"image_id": "q1", "identity": "", "split": "query", "dataset": "D"},
    {"image_id": "q2", "identity": "", "split": "query", "dataset": "D"},
]
SOLUTION = [
    {"image_id": "q1", "identity": "a", "dataset": "D", "new": "False"},
    {"image_id": "q2", "identity": "z", "dataset": "D", "new": "True"},
]


def problems_of(root, **kw):
    with pytest.raises(DataValidationError) as err:
        validate_dataset(root, **kw)
    return err.value.problems, str(err.value)


def test_valid_dataset_returns_hashes_and_solution(tmp_path):
    write_dataset(tmp_path, ROWS, SOLUTION)
    meta, solution = validate_dataset(tmp_path)
    assert len(meta) == 5 and len(solution) == 2
    assert meta["sha1"].str.len().eq(40).all()
    assert meta["abspath"].map(lambda p: p.startswith("/")).all()


def test_missing_columns_are_named(tmp_path):
    write_dataset(tmp_path, ROWS)
    pd.read_csv(tmp_path / "metadata.csv").drop(columns=["split", "species"]).to_csv(
        tmp_path / "metadata.csv", index=False
    )
    problems, text = problems_of(tmp_path)
    assert "metadata.csv:1" in text and "'split'" in text and "'species'" in text


def test_extra_required_column(tmp_path):
    write_dataset(tmp_path, ROWS)
    _, text = problems_of(tmp_path, extra_columns=["viewpoint"])
    assert "'viewpoint'" in text


def test_all_row_problems_reported_at_once(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[1]["image_id"] = "g1"  # duplicate of line 2
    rows[2]["split"] = "train"  # unknown split
    rows[4]["write"] = False  # missing image
    rows.append({"image_id": "g9", "identity": "", "split": "database", "dataset": "D"})  # no identity
    rows.append({"image_id": "q9", "identity": "", "split": "query", "dataset": "Empty"})  # no database
    write_dataset(tmp_path, rows)
    (tmp_path / "images/D/database/g1.png").write_bytes(b"not an image at all")  # corrupt
    problems, text = problems_of(tmp_path)
    assert "duplicate image_id 'g1' on lines 2, 3" in text
    assert "metadata.csv:4: unknown split 'train'" in text
    assert "metadata.csv:6: image 'images/D/query/q2.png': image file does not exist" in text
    assert "metadata.csv:2: image 'images/D/database/g1.png': cannot decode" in text
    assert "metadata.csv:7: database image without an identity" in text
    assert "dataset 'Empty' has no database images" in text
    assert len(problems) >= 6


def test_truncated_image_is_corrupt(tmp_path):
    write_dataset(tmp_path, ROWS)
    path = tmp_path / ROWS[0].get("path", "images/D/database/g1.png")
    img = tmp_path / "images/D/database/g1.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(img, quality=90)
    data = img.read_bytes()
    path.unlink()
    img.write_bytes(data[: len(data) // 3])
    meta = pd.read_csv(tmp_path / "metadata.csv", dtype=str, keep_default_na=False)
    meta.loc[0, "path"] = "images/D/database/g1.jpg"
    meta.to_csv(tmp_path / "metadata.csv", index=False)
    _, text = problems_of(tmp_path)
    assert "g1.jpg" in text and "cannot decode" in text


def test_solution_problems(tmp_path):
    bad = [dict(SOLUTION[0], new="maybe")]
    write_dataset(tmp_path, ROWS, bad)
    _, text = problems_of(tmp_path)
    assert "solution.csv:2: 'new' must be True or False" in text
    assert "query image 'q2' of metadata.csv is not in the solution" in text


def test_missing_metadata_file(tmp_path):
    _, text = problems_of(tmp_path)
    assert "metadata.csv: file does not exist" in text


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "I;16", "CMYK"])
def test_image_modes_load_as_rgb(tmp_path, mode):
    path = write_image(tmp_path / f"x.{'tif' if mode in ('I;16', 'CMYK') else 'png'}", mode=mode)
    arr = load_rgb(path)
    assert arr.dtype == np.uint8 and arr.shape == (40, 48, 3)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((20, 60, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "r.jpg").shape == (60, 20, 3)


def test_load_rgb_errors_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: image file does not exist"):
        load_rgb(tmp_path / "nope.png")


@pytest.mark.skipif(
    not DOGFACENET.is_dir(), reason="../shared/datasets/dogfacenet is absent (only CI and dev machines have it)"
)
def test_dogfacenet_validates():
    meta, solution = validate_dataset(DOGFACENET)
    assert set(meta["split"]) == {"database", "query"}
    assert len(solution) == (meta["split"] == "query").sum()
