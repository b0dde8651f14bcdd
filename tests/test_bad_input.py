"""Bad and hostile input: each case is refused with a message that names the file, the row or key, and the fix.

Also: unsafe dataset names stop the workflow when the Snakefile is parsed (no job starts, no command runs), every
shell placeholder of every rule is quoted, and ids that look like numbers or NA survive every stage verbatim.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, write_dataset
from PIL import Image
from workflow_helpers import make_workdir, snakemake

from workflow import NEW_INDIVIDUAL
from workflow.data import (
    DataValidationError,
    check_split_coverage,
    dataset_name_problem,
    path_problem,
    read_dataset_names,
    validate_dataset,
)

TINY = REPO / "tests" / "configs" / "tiny.yaml"

ROWS = [
    {"image_id": "g1", "identity": "a", "split": "database", "dataset": "D"},
    {"image_id": "g2", "identity": "a", "split": "database", "dataset": "D"},
    {"image_id": "g3", "identity": "b", "split": "database", "dataset": "D"},
    {"image_id": "q1", "identity": "", "split": "query", "dataset": "D"},
    {"image_id": "q2", "identity": "", "split": "query", "dataset": "D"},
]


def _set(row: int, **values):
    def mutate(root: Path) -> None:
        meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
        for key, value in values.items():
            meta.loc[row, key] = value
        meta.to_csv(root / "metadata.csv", index=False)

    return mutate


def _latin1(root: Path) -> None:
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    meta.loc[2, "identity"] = "Zoë"
    meta.to_csv(root / "metadata.csv", index=False, encoding="latin-1")


def _no_queries(root: Path) -> None:
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    extra = meta.iloc[:2].assign(dataset="Gallery", image_id=["x1", "x2"])
    pd.concat([meta, extra]).to_csv(root / "metadata.csv", index=False)


def _symlink_outside(root: Path) -> None:
    outside = root.parent / "elsewhere"
    outside.mkdir()
    target = root / "images/D/database/g2.png"
    shutil.move(target, outside / "g2.png")
    target.symlink_to(outside / "g2.png")


def _symlink_loop(root: Path) -> None:
    looped = root / "images/D/database/g2.png"
    looped.unlink()
    looped.symlink_to(root / "images/D/database/loop.png")
    (root / "images/D/database/loop.png").symlink_to(looped)


def _ragged(root: Path) -> None:
    with open(root / "metadata.csv", "a") as fh:
        fh.write("q3,,images/x.png,,,dog,query,D,one,field,too,many\n")


def _latin1_solution(root: Path) -> None:
    pd.DataFrame(
        [
            {"image_id": "q1", "identity": "Zoë", "dataset": "D", "new": "True"},
            {"image_id": "q2", "identity": "b", "dataset": "D", "new": "False"},
        ]
    ).to_csv(root / "solution.csv", index=False, encoding="latin-1")


def _rename_dataset(name: str):
    def mutate(root: Path) -> None:
        meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
        meta.assign(dataset=name).to_csv(root / "metadata.csv", index=False)

    return mutate


# (case, how the valid dataset is spoiled, what the message must contain: file:line, the key/value, the fix)
CASES = [
    ("shell in dataset", _set(0, dataset="$(touch PWNED)"),
     ["metadata.csv:2", "dataset name '$(touch PWNED)'", "rename it", "'touch_PWNED'"]),
    ("space in dataset", _set(1, dataset="a b"), ["metadata.csv:3", "dataset name 'a b'", "rename it", "'a_b'"]),
    ("slash in dataset", _set(4, dataset="x/y"), ["metadata.csv:6", "dataset name 'x/y'", "rename it", "'x_y'"]),
    ("dot dataset", _set(4, dataset=".."), ["metadata.csv:6", "dataset name '..'", "rename it"]),
    ("dataset ALL", _rename_dataset("ALL"), ["metadata.csv:2", "dataset name 'ALL' is reserved", "mean",
                                              "rename it", "'ALL_data'"]),
    ("dataset default", _rename_dataset("Default"), ["metadata.csv:2", "dataset name 'Default' is reserved",
                                                     "per-dataset config", "'Default_data'"]),
    ("long dataset", _set(0, dataset="L" * 65), ["metadata.csv:2", "65 characters long (at most 64)", "rename it"]),
    ("reserved identity", _set(2, identity=NEW_INDIVIDUAL),
     ["metadata.csv:4", "identity 'new_individual'", "rename that individual", "'new_individual_1'"]),
    ("control character", _set(1, identity="a\tb"), ["metadata.csv:3", "identity 'a\\tb'", "control character",
                                                     "remove it"]),
    ("no query rows", _no_queries, ["metadata.csv:7", "dataset 'Gallery' has no query images",
                                    "add rows with split=query for it, or remove its 2 row(s)"]),
    ("not utf-8", _latin1, ["metadata.csv:4", "not UTF-8", "byte 0xEB", "re-save the file as UTF-8"]),
    ("not utf-8 solution", _latin1_solution, ["solution.csv:2", "not UTF-8", "re-save the file as UTF-8"]),
    ("ragged csv", _ragged, ["metadata.csv:7", "not a valid CSV table", "fix that line"]),
    ("parent path", _set(1, path="../other/img.jpg"),
     ["metadata.csv:3", "image path '../other/img.jpg' leaves the data folder", "relative to that folder"]),
    ("nested parent path", _set(1, path="images/../../x.png"), ["metadata.csv:3", "leaves the data folder"]),
    ("absolute path", _set(3, path="/etc/passwd"),
     ["metadata.csv:5", "image path '/etc/passwd' is an absolute path", "relative to the folder of metadata.csv"]),
    ("windows path", _set(3, path="C:\\data\\x.jpg"), ["metadata.csv:5", "is an absolute path"]),
    ("symlink loop", _symlink_loop,
     ["metadata.csv:3: image 'images/D/database/g2.png': is a symbolic link loop", "replace the link"]),
    ("symlink outside", _symlink_outside,
     ["metadata.csv:3", "images/D/database/g2.png", "outside the data folder", "copy the image into the data folder",
      "data.allow_external_symlinks"]),
]  # fmt: skip


@pytest.mark.parametrize("case,spoil,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_file_line_and_fix(tmp_path, case, spoil, expected):
    root = write_dataset(tmp_path / "data", ROWS)
    spoil(root)
    with pytest.raises(DataValidationError) as err:
        validate_dataset(root)
    text = str(err.value)
    for part in expected:
        assert part in text, f"{case}: {part!r} not in\n{text}"
    assert "Traceback" not in text


def test_an_image_above_the_decompression_bomb_limit_is_a_row(tmp_path, monkeypatch):
    root = write_dataset(tmp_path / "data", ROWS)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the images are 48 x 40: above twice the limit
    with pytest.raises(DataValidationError) as err:
        validate_dataset(root)
    text = str(err.value)
    assert "metadata.csv:2: image 'images/D/database/g1.png': image too large to decode" in text, text
    assert "resize it" in text and "Traceback" not in text


def test_rough_edges_of_metadata_and_solution(tmp_path):
    from workflow.data import MAX_LISTED
    from workflow.tables import build_tables, sync_tables

    # many missing images: the first MAX_LISTED are listed, then how many more
    many = ROWS + [{"image_id": f"m{i}", "identity": "b", "split": "database", "dataset": "D", "write": False}
                   for i in range(MAX_LISTED + 10)]  # fmt: skip
    root = write_dataset(tmp_path / "many", many)
    with pytest.raises(DataValidationError) as err:
        validate_dataset(root)
    assert len(err.value.problems) == MAX_LISTED + 10
    assert str(err.value).count("image file does not exist") == MAX_LISTED
    assert "... and 10 more (fix these and start again to see the rest)" in str(err.value)
    # a header without rows says so
    root = write_dataset(tmp_path / "empty", ROWS)
    header = (root / "metadata.csv").read_text().splitlines()[0]
    (root / "metadata.csv").write_text(header + "\n")
    with pytest.raises(DataValidationError, match="metadata.csv: has a header but no rows"):
        validate_dataset(root)
    # a quoted field with a line break: the rows after it keep their line in the file
    root = write_dataset(tmp_path / "quoted", ROWS)
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    meta.loc[0, "species"] = "lynx\n(two lines)"
    meta.loc[3, "split"] = "querry"
    meta.to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataValidationError, match=r"metadata.csv:6: unknown split 'querry'"):
        validate_dataset(root)
    # valid but probably not meant: warned, with the line
    rows = [dict(ROWS[0], identity="a "), *ROWS[1:3], dict(ROWS[3], identity="b"), ROWS[4]]
    root = write_dataset(tmp_path / "warned", rows)
    warned = []
    build_tables(root, ["D"], stats_dir=tmp_path / "stats", warn=warned.append)
    assert any("metadata.csv:2: identity 'a ' has leading or trailing spaces" in w for w in warned), warned
    assert any("metadata.csv:5: query row(s) with an identity" in w for w in warned), warned
    # solution.csv with new=maybe stops the start, before any job
    write_dataset(root, rows, solution=[{"image_id": "q1", "identity": "a", "dataset": "D", "new": "maybe"},
                                        {"image_id": "q2", "identity": "b", "dataset": "D", "new": "False"}])
    with pytest.raises(DataValidationError, match=r"solution.csv:2: 'new' must be True or False, got 'maybe'"):
        sync_tables(root, tmp_path / "tables", ["D"], stats_dir=tmp_path / "stats")


def test_valid_input_passes_every_new_check(tmp_path):
    root = write_dataset(tmp_path / "data", ROWS)
    meta, _ = validate_dataset(root)
    assert len(meta) == len(ROWS)
    assert read_dataset_names(root) == ["D"]


def test_a_symlink_inside_the_data_folder_is_fine_and_outside_can_be_allowed(tmp_path):
    root = write_dataset(tmp_path / "data", ROWS)
    (root / "images/D/database/g2.png").unlink()
    (root / "images/D/database/g2.png").symlink_to(root / "images/D/database/g1.png")
    validate_dataset(root)
    _symlink_outside(write_dataset(tmp_path / "other", ROWS))
    validate_dataset(tmp_path / "other", allow_external_symlinks=True)


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    root = write_dataset(tmp_path / "data", ROWS)
    text = (root / "metadata.csv").read_text()
    (root / "metadata.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    meta, _ = validate_dataset(root)
    assert "image_id" in meta.columns


@pytest.mark.parametrize("name", ["LynxID2025", "SeaTurtleID2022", "007", "1e3", "a.b-c_d", "x" * 64])
def test_safe_dataset_names(name):
    assert dataset_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "a b", "x/y", "$(touch PWNED)", "-rf", ".hidden", "a;b", "é", "x" * 65])
def test_unsafe_dataset_names(name):
    assert dataset_name_problem(name) is not None


@pytest.mark.parametrize("path", ["images/a.jpg", "a.jpg", "./images/a.jpg", "images/sub/../a.jpg", "a..b.jpg"])
def test_paths_inside_the_root(path):
    assert path_problem(path) is None


def test_split_coverage_is_one_relaxable_rule():
    df = pd.DataFrame({"dataset": ["G", "G"], "split": ["database", "database"]})
    assert check_split_coverage(df, "metadata.csv")
    assert check_split_coverage(df, "metadata.csv", need=("database",)) == []


def _shell_lines(text: str):
    in_shell = False
    for n, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("shell:"):
            in_shell = True
        elif in_shell and stripped.startswith('"'):
            yield n, stripped
        else:
            in_shell = False


def test_every_shell_placeholder_is_quoted():
    unquoted, seen = [], 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for n, line in _shell_lines(smk.read_text()):
            for name, spec in re.findall(r"\{([A-Za-z_.]+)(?::([a-z]*))?\}", line):
                seen += 1
                if name.split(".")[0] in ("input", "output", "log", "params", "wildcards") and spec != "q":
                    unquoted.append(f"{smk.name}:{n}: {{{name}}}")
    assert seen > 100
    assert not unquoted, "unquoted shell placeholders:\n" + "\n".join(unquoted)


@pytest.mark.parametrize("name", ["$(touch PWNED)", "a b", "x/y"])
def test_unsafe_dataset_name_stops_the_workflow_when_parsed(tmp_path, name):
    data = write_dataset(tmp_path / "data", [dict(r, dataset=name) for r in ROWS])
    work = make_workdir(tmp_path / "w")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    runs = [["-n"], ["--cores", "1"]] if "PWNED" in name else [["-n"]]  # a real run must not start a job either
    for args in runs:
        proc = snakemake(work, *args, "--configfile", str(TINY), "--config", f"data_root={data}", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert f"dataset name {name!r}" in out and "metadata.csv:2" in out and "rename it" in out, out[-3000:]
        assert not (work / "results").exists() and not (work / "logs").exists()
    after = sorted(p.name for p in tmp_path.rglob("*") if ".snakemake" not in p.parts)
    assert "PWNED" not in after and not (REPO / "PWNED").exists()
    assert set(after) <= set(before) | {".snakemake"}


def test_one_gallery_individual_with_auto_thresholds_is_refused_at_start_and_runs_with_a_fixed_one(tmp_path):
    rows = [dict(r, identity="a") if r["split"] == "database" else r for r in ROWS]
    data = write_dataset(tmp_path / "data", rows)
    work = make_workdir(tmp_path / "w")
    (work / "one.yaml").write_text(
        "stages: [baseline]\nsubmission: {stage: baseline}\ncascade: {default: null}\n"
        f"data_root: {data}\nbackbones: {{lite0: {{source: efficientnet-lite0, input_size: 64}}}}\n"
        "baseline: {backbone: lite0}\nshortlist: {backbone: lite0}\n"
    )
    proc = snakemake(work, "-n", "--configfile", "one.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    expected = "config key thresholds.baseline.default: auto for dataset 'D', whose gallery has 1 individual"
    assert expected in out, out[-3000:]
    assert "thresholds.baseline.D: 0.5" in out and "Traceback" not in out
    assert not (work / "results").exists()
    (work / "fixed.yaml").write_text("thresholds: {baseline: {D: 0.5}}\n")
    snakemake(work, "results/submission.csv", "--cores", "1", "--configfile", "one.yaml", "fixed.yaml")
    submission = pd.read_csv(work / "results/submission.csv", dtype=str, keep_default_na=False)
    assert sorted(submission["image_id"]) == ["q1", "q2"]


# Identities and image ids that pandas would read as numbers, NA or booleans; the data folder's name holds a
# space and a command substitution so that every quoted path is exercised too.
KNOWN = ["0012", "0007", "1e3", "NaN", "True"]
NEW = ["null", "00"]


def _texture(seed: int, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)


def _write_numeric_dataset(root: Path) -> Path:
    rows, solution, n = [], [], 0
    rng = np.random.default_rng(1)

    def image(base: np.ndarray) -> str:
        nonlocal n
        n += 1
        image_id = f"{n:03d}"
        shifted = np.roll(base, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)) + rng.normal(0, 6, base.shape)
        path = f"images/{image_id}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)).save(root / path)
        return image_id

    for k, ident in enumerate(KNOWN):
        base = _texture(k)
        for _ in range(3):
            rows.append({"image_id": image(base), "identity": ident, "split": "database"})
        qid = image(base)
        rows.append({"image_id": qid, "identity": "", "split": "query"})
        solution.append({"image_id": qid, "identity": ident, "new": "False"})
    for k, ident in enumerate(NEW):
        qid = image(_texture(100 + k))
        rows.append({"image_id": qid, "identity": "", "split": "query"})
        solution.append({"image_id": qid, "identity": ident, "new": "True"})
    meta = pd.DataFrame(rows).assign(
        path=lambda d: "images/" + d["image_id"] + ".png", date="", orientation="left", species="dog", dataset="007"
    )
    cols = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
    meta[cols].to_csv(root / "metadata.csv", index=False)
    pd.DataFrame(solution).assign(dataset="007")[["image_id", "identity", "dataset", "new"]].to_csv(
        root / "solution.csv", index=False
    )
    return root


@pytest.mark.slow
def test_numeric_looking_ids_survive_every_stage_verbatim(tmp_path):
    data = _write_numeric_dataset(tmp_path / "my data $(touch PWNED)")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(  # the tiny config with one matcher in one shard: every stage, fewer jobs
        "rerank: {datasets: ['007'], k1: 20, k2: 6, lambda: 0.1}\nwildfusion: {matchers: [rootsift], shards: 1}\n"
    )
    work = make_workdir(tmp_path / "w")
    snakemake(work, "--cores", "2", "--configfile", str(TINY), str(overlay), "--config", f"data_root={data}")
    assert not list(tmp_path.rglob("PWNED")) and not (work / "PWNED").exists()

    def read(path: Path, sep: str = ",") -> pd.DataFrame:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)

    meta, sol = read(data / "metadata.csv"), read(data / "solution.csv")
    queries = meta.loc[meta["split"] == "query", "image_id"].tolist()
    assert read(work / "results/data/007.tsv", "\t")["image_id"].tolist() == meta["image_id"].tolist()
    for stage in ["baseline", "wildfusion", "rerank", "xgboost", "dual_backbone", "cascade"]:
        preds = read(work / f"results/stages/{stage}/007/predictions.tsv", "\t")
        assert sorted(preds["image_id"]) == sorted(queries), stage
        assert set(preds["identity"]) <= {*KNOWN, NEW_INDIVIDUAL}, (stage, set(preds["identity"]))
        assert set(preds["top_identity"]) <= {*KNOWN, ""}, (stage, set(preds["top_identity"]))
    sub = read(work / "results/submission.csv")
    assert sub["image_id"].tolist() == queries
    assert set(sub["identity"]) <= {*KNOWN, NEW_INDIVIDUAL}
    # the cascade's score is that of the submission against the solution, both compared as exact strings
    from workflow.metrics import score_predictions

    merged = sol.merge(sub.rename(columns={"identity": "predicted"}), on="image_id")
    expected = score_predictions(merged["identity"], merged["predicted"], (merged["new"] == "True").to_numpy())
    scores = read(work / "results/scores.tsv", "\t")
    row = scores[(scores["stage"] == "cascade") & (scores["dataset"] == "007")].iloc[0]
    for key in ["BAKS", "BAUS", "score"]:
        assert float(row[key]) == pytest.approx(expected[key], abs=1e-6), key
    assert set(scores["dataset"]) == {"007", "ALL"}
    baseline = scores[(scores["stage"] == "baseline") & (scores["dataset"] == "007")].iloc[0]
    assert float(baseline["BAKS"]) > 0  # the textures are easy: known queries are found under their own ids


def test_an_identity_named_other_stays_apart_from_unseen_neighbours():
    from workflow.xgb import OTHER, assemble_features, build_space

    space = build_space(["b"], [np.zeros((2, 4))], 1, ["other", "x"], ["left"], ["D"])
    assert space.identities == ["other", "x", OTHER]
    ids = np.array([["other"], ["never_seen"]], object)
    feats = assemble_features(
        space, np.zeros((2, 4)), np.ones((2, 1)), ids, np.array(["left"] * 2), np.array(["D"] * 2)
    )
    assert feats["nn_id_1"].tolist() == ["other", OTHER]


TRICKY = ["0012", "0007", "1e3", "NaN", "null", "True", "001", "N/A", " 7"]


def test_read_tsv_keeps_ids_exact_and_parses_numbers(tmp_path):
    from workflow.stage_io import read_tsv, write_tsv

    n = len(TRICKY)
    df = pd.DataFrame(
        {"image_id": TRICKY, "identity": [*TRICKY[1:], ""], "top_identity": TRICKY[::-1], "dataset": ["007"] * n,
         "decided_by": ["rerank:label"] * n, "top_score": [0.5, np.nan, *range(n - 2)], "custom_identity": TRICKY}
    )  # fmt: skip
    write_tsv(df, tmp_path / "t.tsv")
    back = read_tsv(tmp_path / "t.tsv")
    for col in ["image_id", "identity", "top_identity", "dataset", "custom_identity"]:
        assert back[col].tolist() == df[col].tolist(), col
    assert back["top_score"].dtype == np.float64 and np.isnan(back["top_score"].iloc[1])


def test_read_table_keeps_every_cell_exact(tmp_path):
    from workflow.data import read_table

    pd.DataFrame({"image_id": TRICKY, "new": ["True"] * len(TRICKY)}).to_csv(tmp_path / "s.csv", index=False)
    back = read_table(tmp_path / "s.csv")
    assert back["image_id"].tolist() == TRICKY and back["new"].tolist() == ["True"] * len(TRICKY)


def test_embeddings_and_pairs_keep_image_ids_exact(tmp_path):
    from workflow.embed import load_embeddings, save_embeddings
    from workflow.shortlist import read_pairs
    from workflow.stage_io import write_parquet

    save_embeddings(tmp_path / "e.npz", TRICKY, np.zeros((len(TRICKY), 3)))
    ids, _ = load_embeddings(tmp_path / "e.npz")
    assert [type(i) for i in ids] == [str] * len(TRICKY) and list(ids) == TRICKY
    write_parquet(pd.DataFrame({"query": TRICKY, "candidate": TRICKY[::-1], "cosine": 0.5}), tmp_path / "p.parquet")
    pairs = read_pairs(tmp_path / "p.parquet")
    assert pairs["query"].tolist() == TRICKY and pairs["candidate"].tolist() == TRICKY[::-1]


def test_cascade_keeps_numeric_looking_identities(tmp_path):
    from workflow.cascade import main as cascade_main
    from workflow.stage_io import write_json, write_tsv

    preds = pd.DataFrame({"image_id": ["001", "002"], "identity": ["0012", "1e3"], "top_identity": ["0012", "1e3"],
                          "top_score": [0.9, 0.8]})  # fmt: skip
    write_tsv(preds, tmp_path / "p.tsv")
    write_json({"threshold": 0.5}, tmp_path / "t.json")
    out = tmp_path / "c.tsv"
    cascade_main(["--dataset", "007", "--steps", '[{"source": "baseline", "new_below": "auto"}]', "--source",
                  f"baseline={tmp_path / 'p.tsv'}", "--threshold", f"baseline={tmp_path / 't.json'}",
                  "--predictions", str(out)])  # fmt: skip
    back = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert back["image_id"].tolist() == ["001", "002"] and back["identity"].tolist() == ["0012", "1e3"]


def test_a_corrupt_image_stops_a_first_run_before_any_dataset_is_embedded(tmp_path):
    """On a first run the tables are written by a job (rule validate_data): one job for every dataset without a
    table, so no dataset is embedded while another's images are still being checked."""
    rows = [*ROWS, *[dict(r, image_id=f"e{r['image_id']}", dataset="E") for r in ROWS]]
    data = write_dataset(tmp_path / "data", rows)
    broken = data / "images/E/database/eg3.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated: the header survives, the pixels do not
    work = make_workdir(tmp_path / "w")
    (work / "two.yaml").write_text(
        "stages: [baseline]\nsubmission: {stage: baseline}\ncascade: {default: null}\n"
        f"data_root: {data}\nbackbones: {{lite0: {{source: efficientnet-lite0, input_size: 64}}}}\n"
        "baseline: {backbone: lite0}\nshortlist: {backbone: lite0}\n"
        "thresholds: {baseline: {default: 0.5}}\n"
    )
    plan = snakemake(work, "-n", "--quiet", "rules", "--configfile", "two.yaml").stdout
    assert re.search(r"^validate_data\s+1$", plan, flags=re.M), plan
    # --keep-going: with one validation job per dataset, D's embedding would run after E's check failed
    proc = snakemake(work, "--cores", "1", "--keep-going", "--configfile", "two.yaml", check=False)
    assert proc.returncode != 0
    log = (work / "logs/validate_data.log").read_text()
    assert "eg3.png" in log, log[-2000:]
    assert not (work / "results/embeddings").exists(), "a dataset was embedded before every image was checked"
    broken.write_bytes((data / "images/E/database/eg2.png").read_bytes())  # fixed: the run goes on
    snakemake(work, "results/submission.csv", "--cores", "1", "--configfile", "two.yaml")
