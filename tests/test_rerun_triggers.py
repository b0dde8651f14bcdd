"""What a change of the input data reruns: the answer key, a metadata typo, an image replaced in place.

One tiny run on the demo's data placed as the user's own data (``data_root`` outside the demo), first without
a solution.csv; each test changes the data, checks the plan of a dry-run (and what survived), and puts the
data back.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

TINY = REPO / "tests" / "configs" / "tiny.yaml"
# the tiny config cut to the stages that hold the expensive jobs (embeddings, features, match shards)
SMALL_CONFIG = {"stages": ["baseline", "wildfusion"], "submission": {"stage": "wildfusion"},
                "cascade": {"default": None}, "wildfusion": {"matchers": ["rootsift"], "shards": 2}}  # fmt: skip
EXPENSIVE = {"embed", "extract_features", "match_shard", "shortlist", "calibrate", "xgboost_train",
             "dual_backbone_train", "lnbnn", "lnbnn_pairs"}  # fmt: skip
# every job that may read solution.csv (the HTML table follows the scores table)
SCORING = {"validate_solution", "score_stage", "scores_table", "scores_html", "plot_new_share", "plot_matches",
           "shortlist_recall"}  # fmt: skip

DATASETS = 2  # LynxTiny, SalamanderTiny
pytestmark = pytest.mark.slow


def dry_run(work: Path, data: Path, check: bool = True):
    """A dry-run on ``data``: its job counts per rule ({} when there is nothing to do), job messages, process."""
    proc = snakemake(work, "-n", "--configfile", "small.yaml", "--config", f"data_root={data}", check=check)
    stats = proc.stdout.split("Job stats:", 1)[1].strip().split("\n\n")[0] if "Job stats:" in proc.stdout else ""
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
    counts = {rule: n for rule, n in counts.items() if rule not in ("total", "all")}
    return counts, re.findall(r"^Job \d+: (.*)$", proc.stdout, flags=re.M), proc


def plan(work: Path, data: Path) -> dict[str, int]:
    return dry_run(work, data)[0]


def run(work: Path, data: Path, check: bool = True):
    return snakemake(work, "--cores", "2", "--configfile", "small.yaml", "--config", f"data_root={data}", check=check)


def snapshot(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """(work, data): a finished tiny run on data of the user's own (no solution.csv), and the solution aside."""
    from workflow.demo.cli import main as make_demo

    root = tmp_path_factory.mktemp("own")
    data = root / "data"
    tiny = yaml.safe_load(TINY.read_text())
    tiny["demo"]["datasets"] = tiny["demo"]["datasets"][:DATASETS]  # the lynx and the salamander
    make_demo(["--config", json.dumps(tiny["demo"]), "--out", str(data)])
    shutil.move(data / "solution.csv", root / "solution.csv")
    work = make_workdir(root / "work")
    (work / "small.yaml").write_text(yaml.safe_dump({**tiny, **SMALL_CONFIG}))
    run(work, data)
    assert plan(work, data) == {}
    return work, data


def test_a_metadata_typo_stops_the_run_and_its_fix_reruns_nothing(own_data):
    work, data = own_data
    meta_file = data / "metadata.csv"
    good = meta_file.read_bytes()
    before = snapshot(work)
    meta = pd.read_csv(meta_file, dtype=str, keep_default_na=False)
    meta.loc[4, "split"] = "databse"
    meta.to_csv(meta_file, index=False)
    proc = run(work, data, check=False)
    assert proc.returncode != 0
    assert f"{meta_file}:6: unknown split 'databse'" in proc.stdout + proc.stderr
    assert "no job was started and nothing was deleted" in proc.stdout + proc.stderr
    assert snapshot(work) == before, "a failed validation changed or deleted results"
    meta_file.write_bytes(good)  # the fix: metadata.csv is newer than every result, its content as before
    assert plan(work, data) == {}
    assert snapshot(work) == before


def test_an_added_column_sorted_rows_or_edited_species_rerun_nothing(own_data):
    work, data = own_data
    good, before = (data / "metadata.csv").read_bytes(), snapshot(work)
    edited = pd.read_csv(data / "metadata.csv", dtype=str, keep_default_na=False)
    try:
        edited = edited.assign(notes="seen by the ranger", species="Lynx pardinus")
        edited.sort_values("image_id", ascending=False).to_csv(data / "metadata.csv", index=False)
        assert plan(work, data) == {}
        assert snapshot(work) == before, "a table was rewritten"
    finally:
        (data / "metadata.csv").write_bytes(good)
    assert plan(work, data) == {}


def test_an_image_replaced_in_place_reruns_exactly_its_dataset(own_data):
    work, data = own_data
    meta = pd.read_csv(data / "metadata.csv", dtype=str, keep_default_na=False)
    lynx = meta[(meta["dataset"] == "LynxTiny") & (meta["split"] == "database")]["path"].tolist()
    victim = data / lynx[0]
    original = victim.read_bytes()
    before = snapshot(work)
    full = snakemake(work, "-n", "--quiet", "rules", "--forceall", "--configfile", "small.yaml",
                     "--config", f"data_root={data}").stdout  # fmt: skip
    every = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", full, flags=re.M)}
    try:
        victim.write_bytes((data / lynx[1]).read_bytes())  # another photo under the same name
        counts, messages, _ = dry_run(work, data)
        # every job of the lynx that reads images or their products, and none of the other datasets
        for rule in ("embed", "extract_features", "match_shard", "shortlist", "calibrate", "wildfusion", "baseline"):
            assert counts.get(rule) == every[rule] // DATASETS, (rule, counts)
        assert set(counts) - EXPENSIVE <= {"baseline", "wildfusion", "plot_matches", "score_stage", "scores_table",
                                           "scores_html", "submission", "review"}, counts  # fmt: skip
        assert messages and not [m for m in messages if "SalamanderTiny" in m], messages
        table = pd.read_csv(work / "results/data/LynxTiny.tsv", sep="\t", dtype=str, keep_default_na=False)
        assert table["sha1"].nunique() == len(table) - 1  # the copy has the content hash of the other photo
        # a truncated image stops the run before any job, naming the row; nothing is deleted
        victim.write_bytes(original[:100])
        stamps = snapshot(work)
        _, _, proc = dry_run(work, data, check=False)
        assert proc.returncode != 0
        line = meta.index[meta["path"] == lynx[0]][0] + 2
        assert f"metadata.csv:{line}: image '{lynx[0]}'" in proc.stdout + proc.stderr
        assert "cannot decode" in proc.stdout + proc.stderr
        assert snapshot(work) == stamps
    finally:
        victim.write_bytes(original)
    # back to the original photo: the table's content is again what every result was computed from
    assert plan(work, data) == {}
    assert all(snapshot(work)[p] == t for p, t in before.items() if p.name != "LynxTiny.tsv")


def test_adding_or_editing_the_solution_reruns_only_scoring(own_data):
    """Last in this module: it leaves the data with a broken solution.csv."""
    work, data = own_data
    before = snapshot(work)
    shutil.copy(data.parent / "solution.csv", data / "solution.csv")
    jobs = plan(work, data)
    assert set(jobs) <= SCORING and {"validate_solution", "score_stage", "shortlist_recall"} <= set(jobs), jobs
    run(work, data)
    after = snapshot(work)
    expensive = [p for p in before if not any(part in str(p) for part in ("/stages/", "/plots/", "scores"))]
    assert all(after[p] == before[p] for p in expensive), "an expensive output was rewritten"
    assert json.loads(next((work / "results/shortlist").rglob("*.recall.json")).read_text())["known_queries"] > 0
    # edit the answer key (one known query marked new): only the scoring jobs again
    sol = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
    sol.loc[sol["new"] == "False", "new"] = ["True"] + ["False"] * (int((sol["new"] == "False").sum()) - 1)
    sol.to_csv(data / "solution.csv", index=False)
    jobs = plan(work, data)
    assert set(jobs) <= SCORING and {"validate_solution", "score_stage"} <= set(jobs), jobs
    # a broken answer key fails in its own small job; nothing expensive waits for it
    sol.drop(index=0).to_csv(data / "solution.csv", index=False)
    proc = run(work, data, check=False)
    assert proc.returncode != 0
    assert "is not in the solution" in (work / "logs/validate_solution.log").read_text()
    assert all(p.is_file() for p in expensive)
