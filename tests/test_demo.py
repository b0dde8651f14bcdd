"""Tests of the synthetic demo generator (workflow/demo/) on a tiny three-species config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow import demo
from workflow.data import validate_dataset
from workflow.demo import cli as demo_cli
from workflow.demo import render
from workflow.images import load_rgb

SIZE = 96
SEED = 7
TINY = {
    "seed": SEED,
    "image_size": SIZE,
    "datasets": [
        {
            "name": "LynxTiny",
            "species": "lynx",
            "pattern": "spots",
            "known_individuals": 6,
            "new_individuals": 2,
            "gallery_images": 24,
            "query_images": 9,
            "distribution": "longtail",
            "orientations": ["left", "right", "front", "back", "unknown"],
            "date_range": None,
        },
        {
            "name": "SalamanderTiny",
            "species": "salamander",
            "pattern": "stripes",
            "known_individuals": 10,
            "new_individuals": 3,
            "gallery_images": 15,
            "query_images": 9,
            "distribution": "sparse",
            "orientations": ["top", "left", "right", "bottom"],
            "date_range": [2017, 2024],
        },
        {
            "name": "TurtleTiny",
            "species": "sea_turtle",
            "pattern": "mosaic",
            "known_individuals": 5,
            "new_individuals": 2,
            "gallery_images": 20,
            "query_images": 9,
            "distribution": "medium",
            "orientations": ["left", "right", "front", "top", "topleft", "topright"],
            "date_range": [2010, 2024],
        },
    ],
}
# The shipped demo's shape (no rendering needed to check it).
DEFAULT = [
    dict(TINY["datasets"][0], name="LynxDemo", known_individuals=10, new_individuals=4, gallery_images=110,
         query_images=45),
    dict(TINY["datasets"][1], name="SalamanderDemo", known_individuals=60, new_individuals=15,
         gallery_images=140, query_images=60),
    dict(TINY["datasets"][2], name="TurtleDemo", known_individuals=25, new_individuals=6, gallery_images=220,
         query_images=75),
]  # fmt: skip


def _tiny_datasets() -> list[demo.DemoDataset]:
    return demo.demo_datasets_from_config(TINY)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    metadata, solution = demo.generate_demo(out, _tiny_datasets(), SEED, SIZE)
    return out, metadata, solution


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _gallery_counts(metadata: pd.DataFrame, dataset: str) -> pd.Series:
    part = metadata[(metadata["dataset"] == dataset) & (metadata["split"] == "database")]
    return part["identity"].value_counts()


def test_layout_and_columns(generated):
    out, metadata, solution = generated
    meta, sol = _read(out / "metadata.csv"), _read(out / "solution.csv")
    assert list(meta.columns) == ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
    assert list(sol.columns) == ["image_id", "identity", "dataset", "new"]
    assert set(meta["split"]) == {"database", "query"}
    assert set(meta["dataset"]) == {"LynxTiny", "SalamanderTiny", "TurtleTiny"}
    assert meta["image_id"].is_unique
    assert (meta.loc[meta["split"] == "query", "identity"] == "").all()
    assert (meta.loc[meta["split"] == "database", "identity"] != "").all()
    for row in meta.itertuples():
        assert row.path == f"images/{row.dataset}/{row.split}/{row.image_id}.jpg"
        assert (out / row.path).is_file()
    species = dict(zip(meta["dataset"], meta["species"]))
    assert species == {"LynxTiny": "lynx", "SalamanderTiny": "salamander", "TurtleTiny": "sea_turtle"}
    # the returned tables are what was written
    pd.testing.assert_frame_equal(metadata.astype(str), meta)
    assert len(solution) == len(sol)
    # no leftover temporary files
    assert not list(out.glob(".*.part"))


def test_validates_with_the_data_layer(generated):
    out, _, _ = generated
    df, sol = validate_dataset(out, threads=1)
    assert sol is not None and len(df) == 86


def test_determinism(generated, tmp_path):
    out, _, _ = generated
    demo.generate_demo(tmp_path, _tiny_datasets(), SEED, SIZE)
    for name in ("metadata.csv", "solution.csv"):
        assert (out / name).read_bytes() == (tmp_path / name).read_bytes()
    first = {p.relative_to(out): p.read_bytes() for p in (out / "images").rglob("*.jpg")}
    second = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "images").rglob("*.jpg")}
    assert first == second
    identity = demo.make_identity("spots", np.random.default_rng(3))
    a = demo.render_individual_image(identity, np.random.default_rng(5), SIZE, "left")
    b = demo.render_individual_image(
        demo.make_identity("spots", np.random.default_rng(3)), np.random.default_rng(5), SIZE, "left"
    )
    np.testing.assert_array_equal(a, b)


def test_other_seed_changes_the_data(generated, tmp_path):
    out, _, _ = generated
    demo.generate_demo(tmp_path, _tiny_datasets()[:1], SEED + 1, SIZE)
    first = sorted(p.read_bytes() for p in (out / "images" / "LynxTiny").rglob("*.jpg"))
    second = sorted(p.read_bytes() for p in (tmp_path / "images" / "LynxTiny").rglob("*.jpg"))
    assert first != second


def test_solution_lists_every_query_once(generated):
    out, _, _ = generated
    meta, sol = _read(out / "metadata.csv"), _read(out / "solution.csv")
    queries = meta[meta["split"] == "query"]
    assert sol["image_id"].is_unique
    assert set(sol["image_id"]) == set(queries["image_id"])
    merged = queries.merge(sol, on="image_id", suffixes=("", "_sol"))
    assert (merged["dataset"] == merged["dataset_sol"]).all()
    assert set(sol["new"]) <= {"True", "False"}
    assert (sol["identity"] != "").all() and not (sol["identity"] == "new_individual").any()


@pytest.mark.parametrize("dataset", ["LynxTiny", "SalamanderTiny", "TurtleTiny"])
def test_about_a_third_of_queries_are_new(generated, dataset):
    _, _, solution = generated
    part = solution[solution["dataset"] == dataset]
    assert abs(part["new"].mean() - 1 / 3) <= 0.1


def test_new_and_known_individuals(generated):
    _, metadata, solution = generated
    for dataset, part in solution.groupby("dataset"):
        gallery = set(_gallery_counts(metadata, dataset).index)
        new_ids = set(part.loc[part["new"], "identity"])
        known_ids = set(part.loc[~part["new"], "identity"])
        assert new_ids and not (new_ids & gallery), dataset
        assert known_ids and known_ids <= gallery, dataset
        spec = next(d for d in TINY["datasets"] if d["name"] == dataset)
        assert len(new_ids) == spec["new_individuals"]
        assert len(gallery) == spec["known_individuals"]


def test_query_photos_are_new_photos(generated):
    out, metadata, _ = generated
    digests = [hashlib.sha1((out / p).read_bytes()).hexdigest() for p in metadata["path"]]
    assert len(set(digests)) == len(digests)


def test_gallery_shapes(generated):
    _, metadata, _ = generated
    lynx = _gallery_counts(metadata, "LynxTiny")
    assert lynx.min() == 1  # a singleton
    assert lynx.iloc[0] >= 0.2 * lynx.sum() and lynx.iloc[0] > lynx.iloc[1]  # one dominant individual
    salamander = _gallery_counts(metadata, "SalamanderTiny")
    assert salamander.median() == 1 and salamander.max() <= demo.SPARSE_MAX_IMAGES
    turtle = _gallery_counts(metadata, "TurtleTiny")
    assert turtle.min() >= 1 and turtle.sum() == 20


def test_default_demo_shape_mirrors_table_1():
    lynx, salamander, turtle = (demo.DemoDataset(**d) for d in DEFAULT)
    counts = {ds.name: demo.plan_dataset(ds, 2025) for ds in (lynx, salamander, turtle)}
    per_id = {name: plan[plan["split"] == "database"]["individual"].value_counts() for name, plan in counts.items()}
    lynx_c, sal_c, tur_c = per_id["LynxDemo"], per_id["SalamanderDemo"], per_id["TurtleDemo"]
    assert (lynx_c == 1).sum() >= 1 and 0.25 <= lynx_c.max() / lynx_c.sum() <= 0.3
    assert sal_c.median() == 1 and sal_c.max() <= 12 and len(sal_c) == 60
    assert sal_c.median() < tur_c.median() < lynx_c.median()
    for name, plan in counts.items():
        query = plan[plan["split"] == "query"]
        assert abs(query["new"].mean() - 1 / 3) < 0.02, name


def test_images_are_rgb_of_the_configured_size(generated):
    out, metadata, _ = generated
    for path in metadata["path"].iloc[::7]:
        img = load_rgb(out / path)
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8


def test_orientation_and_dates(generated):
    _, metadata, _ = generated
    for spec in TINY["datasets"]:
        part = metadata[metadata["dataset"] == spec["name"]]
        assert (part["orientation"] != "").all()
        assert set(part["orientation"]) <= set(spec["orientations"])
        if spec["date_range"] is None:
            assert (part["date"] == "").all()
            continue
        y0, y1 = spec["date_range"]
        dates = pd.to_datetime(part["date"], format="%Y-%m-%d")
        gallery, query = dates[part["split"] == "database"], dates[part["split"] == "query"]
        assert gallery.dt.year.between(y0, y1 - 1).all()
        assert (query.dt.year == y1).all()


def test_render_smoke_every_pattern_and_orientation():
    for pattern in demo.PATTERNS:
        identity = demo.make_identity(pattern, np.random.default_rng(0))
        canonical = demo.render_canonical(identity, 64)
        assert canonical.shape == (*demo.canonical_size(64)[::-1], 4) and canonical[..., 3].max() > 0.9
        for orientation in ("left", "right", "front", "back", "top", "bottom", "topleft", "topright", "odd"):
            img = demo.render_individual_image(identity, np.random.default_rng(1), 64, orientation, canonical)
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 5


def test_individuals_differ():
    a = demo.make_identity("stripes", np.random.default_rng(0))
    b = demo.make_identity("stripes", np.random.default_rng(1))
    assert not np.array_equal(demo.render_canonical(a, 64), demo.render_canonical(b, 64))
    with pytest.raises(ValueError, match="pattern must be one of"):
        demo.make_identity("plaid", np.random.default_rng(0))


def test_right_is_the_mirror_of_left():
    identity = demo.make_identity("spots", np.random.default_rng(0))
    canonical = demo.render_canonical(identity, 64)
    view = dict(render._VIEWS)
    h_left = render._homography(view["left"], np.random.default_rng(2), 64)
    h_right = render._homography(view["right"], np.random.default_rng(2), 64)
    centre = np.array([canonical.shape[1] / 2, canonical.shape[0] / 2, 1.0])
    head = np.array([canonical.shape[1] * 0.2, canonical.shape[0] / 2, 1.0])  # head side of the canvas
    for h, sign in ((h_left, -1), (h_right, 1)):
        c, p = h @ centre, h @ head
        assert sign * (p[0] / p[2] - c[0] / c[2]) > 0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda c: c["datasets"][0].update(colour="red"), r"datasets\[0\] has unknown key\(s\) \['colour'\]"),
        (lambda c: c["datasets"][1].pop("pattern"), r"datasets\[1\] is missing key\(s\) \['pattern'\]"),
        (lambda c: c["datasets"][2].update(pattern="plaid"), r"datasets\[2\].*pattern must be one of"),
        (lambda c: c["datasets"][0].update(distribution="flat"), "distribution must be one of"),
        (lambda c: c["datasets"][0].update(known_individuals=0), "known_individuals must be an integer >= 1"),
        (lambda c: c["datasets"][1].update(date_range=[2024, 2017]), "date_range must be null or"),
        (lambda c: c["datasets"][0].update(query_images=2), "query_images"),
        (lambda c: c["datasets"][1].update(gallery_images=200), "sparse: 200 gallery photos are too many"),
        (lambda c: c["datasets"][2].update(name="TurtleTiny", gallery_images=3), "gallery_images"),
        (lambda c: c["datasets"].append(dict(c["datasets"][0])), "names must be unique"),
        (lambda c: c.update(colours=1), r"unknown key\(s\) \['colours'\]"),
        (lambda c: c.update(datasets=[]), "'datasets' must be a non-empty list"),
    ],
)
def test_config_errors_name_the_bad_key(mutate, match):
    cfg = json.loads(json.dumps(TINY))
    mutate(cfg)
    with pytest.raises(ValueError, match=match):
        demo.demo_datasets_from_config(cfg)


def test_config_accepts_whole_workflow_config():
    whole = {"data_root": "resources/demo", "demo": dict(TINY, root="resources/demo")}
    assert demo.demo_datasets_from_config(whole) == demo.demo_datasets_from_config(TINY)
    assert demo.demo_settings_from_config(whole) == (SEED, SIZE)
    with pytest.raises(ValueError, match="image_size must be an integer >= 32"):
        demo.demo_settings_from_config(dict(TINY, image_size=8))


def test_main_with_inline_json_and_yaml(tmp_path):
    cfg = dict(TINY, datasets=TINY["datasets"][:1])
    log = tmp_path / "logs" / "demo.log"
    demo_cli.main(["--config", json.dumps(cfg), "--out", str(tmp_path / "a"), "--log", str(log)])
    assert "LynxTiny" in log.read_text()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"demo": cfg}))
    demo_cli.main(["--config", str(config_file), "--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "metadata.csv").read_bytes() == (tmp_path / "b" / "metadata.csv").read_bytes()
    with pytest.raises(SystemExit):
        demo_cli.main(["--config", json.dumps(dict(cfg, bogus=1)), "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c" / "metadata.csv").exists()
