"""Content-stable dataset tables (workflow/tables.py) and the removal of a dead run's lock (workflow/runlock.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO, write_dataset, write_image

from workflow import tables
from workflow.data import DataValidationError
from workflow.runlock import ALIVE, HOST, release_stale_locks

ROWS = [
    {"image_id": "a1", "identity": "x", "split": "database", "dataset": "A"},
    {"image_id": "a2", "identity": "y", "split": "database", "dataset": "A"},
    {"image_id": "a3", "identity": "", "split": "query", "dataset": "A"},
    {"image_id": "b1", "identity": "z", "split": "database", "dataset": "B"},
    {"image_id": "b2", "identity": "", "split": "query", "dataset": "B"},
]
SOLUTION = [
    {"image_id": "a3", "identity": "x", "dataset": "A", "new": "False"},
    {"image_id": "b2", "identity": "new_individual", "dataset": "B", "new": "True"},
]


@pytest.fixture
def data(tmp_path):
    root = write_dataset(tmp_path / "data", ROWS, SOLUTION)
    out, stats = tmp_path / "out", tmp_path / "stats"
    assert tables.sync_tables(root, out, ["A", "B"], stats_dir=stats) == ["A", "B"]
    return root, out, stats


def mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.tsv")}


def test_unchanged_data_rewrites_nothing_and_reads_no_image(data, monkeypatch):
    root, out, stats = data
    before = mtimes(out)
    meta = root / "metadata.csv"
    meta.write_bytes(meta.read_bytes())  # newer, same content
    monkeypatch.setattr(tables, "check_images", lambda *a, **k: pytest.fail("an unchanged image was read"))
    assert tables.sync_tables(root, out, ["A", "B"], stats_dir=stats) == []
    assert mtimes(out) == before


def test_an_image_replaced_in_place_rewrites_only_its_table(data):
    root, out, stats = data
    before = mtimes(out)
    old_sha = tables.read_tsv(out / "A.tsv")["sha1"].tolist()
    write_image(root / "images/A/database/a2.png", seed=99)
    assert tables.sync_tables(root, out, ["A", "B"], stats_dir=stats) == ["A"]
    new_sha = tables.read_tsv(out / "A.tsv")["sha1"].tolist()
    assert [a != b for a, b in zip(old_sha, new_sha)] == [False, True, False]
    assert mtimes(out)["B.tsv"] == before["B.tsv"]


def test_a_truncated_image_fails_and_writes_nothing(data):
    root, out, stats = data
    before = {p: p.read_bytes() for p in out.glob("*.tsv")}
    image = root / "images/B/database/b1.png"
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(DataValidationError, match=r"metadata.csv:5: image 'images/B/database/b1.png'"):
        tables.sync_tables(root, out, ["A", "B"], stats_dir=stats)
    assert {p: p.read_bytes() for p in out.glob("*.tsv")} == before


def test_a_metadata_typo_fails_and_writes_nothing(data):
    root, out, stats = data
    before = mtimes(out)
    meta = root / "metadata.csv"
    meta.write_text(meta.read_text().replace(",query,A", ",qeury,A"))
    with pytest.raises(DataValidationError, match="unknown split 'qeury'"):
        tables.sync_tables(root, out, ["A", "B"], stats_dir=stats)
    assert mtimes(out) == before


def test_solution_check(data, tmp_path):
    root, out, _ = data
    paths = [out / "A.tsv", out / "B.tsv"]
    assert tables.check_solution_file(root, paths) == {"queries": 2, "new": 1, "known": 1}
    (root / "solution.csv").write_text("image_id,identity,dataset,new\na3,x,A,False\n")
    with pytest.raises(DataValidationError, match="'b2' of metadata.csv is not in the solution"):
        tables.check_solution_file(root, paths)


def test_cli_write_then_solution(data, tmp_path, monkeypatch):
    root, out, _ = data
    target = tmp_path / "cli"
    monkeypatch.chdir(tmp_path)  # the stat cache lives under the working directory's .snakemake
    tables.main(["write", "--root", str(root), "--out-dir", str(target), "--datasets", "B"])
    assert [p.name for p in target.glob("*.tsv")] == ["B.tsv"]
    assert (tmp_path / ".snakemake/image-stats/B.tsv").is_file()
    summary = tmp_path / "solution.json"
    tables.main(["solution", "--root", str(root), "--tables", str(out / "A.tsv"), str(out / "B.tsv"), "--out",
                 str(summary)])  # fmt: skip
    assert json.loads(summary.read_text())["queries"] == 2


def _holder(workdir):
    """A process that marks itself alive in ``workdir`` (as a running Snakemake does) until killed."""
    code = "import sys, time; from workflow.runlock import release_stale_locks; release_stale_locks(sys.argv[1]);"
    code += "print('ready', flush=True); time.sleep(60)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code, str(workdir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_dead_runs_lock_is_removed_a_live_ones_is_not(tmp_path, monkeypatch):
    import workflow.runlock as runlock

    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    holder = _holder(tmp_path)
    (locks / "0.input.lock").write_text("results/x\n")
    monkeypatch.setattr(runlock, "_held", None)
    assert release_stale_locks(tmp_path) == []  # the holder is alive: its lock stays
    assert (locks / "0.input.lock").is_file()
    runlock._held.close()
    monkeypatch.setattr(runlock, "_held", None)
    holder.kill()  # SIGKILL: no clean-up of its own
    holder.wait()
    time.sleep(0.1)
    assert release_stale_locks(tmp_path) == [locks / "0.input.lock"]
    assert not list(locks.glob("*.lock")) and (tmp_path / ".snakemake" / ALIVE).is_file()
    runlock._held.close()
    # a lock whose last judge was another host (whose flocks may be invisible here) is left to --unlock
    (tmp_path / ".snakemake" / HOST).write_text("login-other\n")
    (locks / "0.input.lock").write_text("results/x\n")
    monkeypatch.setattr(runlock, "_held", None)
    assert release_stale_locks(tmp_path) == []
    assert (locks / "0.input.lock").is_file()
    runlock._held.close()
