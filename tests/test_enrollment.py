"""Enrollment of review decisions: gallery versions, their validation, undo, and the tables read through them."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import write_dataset

from workflow.data import DataValidationError
from workflow.enrollment import (
    EnrollmentError,
    active_changes_file,
    active_version,
    enroll,
    enrollment_dir,
    undo,
)
from workflow.tables import build_tables, check_solution_file

ROWS = [
    {"image_id": "g1", "identity": "ann", "split": "database", "dataset": "D"},
    {"image_id": "g2", "identity": "bob", "split": "database", "dataset": "D"},
    {"image_id": "q1", "identity": "", "split": "query", "dataset": "D"},
    {"image_id": "q2", "identity": "", "split": "query", "dataset": "D"},
    {"image_id": "q3", "identity": "", "split": "query", "dataset": "D"},
    {"image_id": "q<4>", "identity": "", "split": "query", "dataset": "D"},
]


def _decisions(path, rows):
    pd.DataFrame(rows, columns=["dataset", "image_id", "decision", "identity", "predicted"]).to_csv(path, index=False)
    return path


@pytest.fixture
def data(tmp_path):
    root = write_dataset(tmp_path / "data", ROWS)
    return root, enrollment_dir(tmp_path / "enrollment", root)


def test_enroll_writes_a_version_and_undo_restores(data, tmp_path):
    root, directory = data
    original = (root / "metadata.csv").read_bytes()
    decisions = _decisions(tmp_path / "d.csv", [
        ["D", "q1", "accept", "ann", "ann"],
        ["D", "q2", "new", "", "new_individual"],
        ["D", "q<4>", "new", "", "new_individual"],
        ["D", "q3", "reject", "", "bob"],
    ])  # fmt: skip
    assert enroll(root, directory, decisions) == 1
    assert (root / "metadata.csv").read_bytes() == original  # the user's file is never written
    gallery = pd.read_csv(directory / "v1" / "metadata.csv", dtype=str, keep_default_na=False).set_index("image_id")
    assert gallery.loc["q1", ["split", "identity"]].tolist() == ["database", "ann"]
    assert gallery.loc["q2", "identity"] == "new_D_1" and gallery.loc["q<4>", "identity"] == "new_D_2"
    assert gallery.loc["q3", "split"] == "query"
    log = pd.read_csv(directory / "log.tsv", sep="\t", dtype=str)
    assert log[["action", "version", "known", "new", "rejected"]].values.tolist() == [["enroll", "1", "1", "2", "1"]]
    table = build_tables(root, ["D"], stats_dir=tmp_path / "stats", enrollment=active_changes_file(directory))["D"]
    assert set(table.loc[table["split"] == "query", "image_id"]) == {"q3"}
    # a second file builds on the first; undo goes back one version at a time, deleting nothing
    assert enroll(root, directory, _decisions(tmp_path / "e.csv", [["D", "q3", "pick", "bob", "ann"]])) == 2
    assert undo(directory) == 1 and undo(directory) == 0
    assert active_changes_file(directory) is None and (directory / "v2" / "changes.csv").is_file()
    with pytest.raises(EnrollmentError, match="nothing to undo"):
        undo(directory)
    assert pd.read_csv(directory / "log.tsv", sep="\t")["action"].tolist() == ["enroll", "enroll", "undo", "undo"]


def test_a_kill_between_the_switch_and_its_log_line_is_recovered(data, tmp_path, monkeypatch):
    import workflow.enrollment as enrollment

    root, directory = data
    decisions = _decisions(tmp_path / "d.csv", [["D", "q1", "accept", "ann", "ann"]])

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("kill -9")  # the process dies after the switch, before the log line

    with monkeypatch.context() as patch:
        patch.setattr(enrollment, "_log", killed)
        with pytest.raises(KeyboardInterrupt):
            enroll(root, directory, decisions)
    assert active_version(directory) == 1 and not (directory / "log.tsv").exists()
    assert enrollment.recover_log(directory)  # the next start (or enroll, undo) writes the missing line
    assert not enrollment.recover_log(directory)
    with monkeypatch.context() as patch:
        patch.setattr(enrollment, "_log", killed)
        with pytest.raises(KeyboardInterrupt):
            undo(directory)
    assert enroll(root, directory, _decisions(tmp_path / "e.csv", [["D", "q2", "pick", "bob", "ann"]])) == 2
    log = pd.read_csv(directory / "log.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert log[["action", "version", "active", "known"]].values.tolist() == [
        ["enroll", "1", "1", "1"], ["undo", "1", "0", ""], ["enroll", "2", "2", "1"]]  # fmt: skip


def test_bad_decisions_name_file_line_and_fix(data, tmp_path):
    root, directory = data
    decisions = _decisions(tmp_path / "bad.csv", [
        ["D", "q1", "maybe", "", ""],
        ["D", "q2", "accept", "carl", ""],
        ["D", "g1", "accept", "ann", ""],
        ["D", "nope", "new", "", ""],
        ["D", "q3", "new", "bob", ""],
        ["D", "q3", "reject", "", ""],
    ])  # fmt: skip
    with pytest.raises(DataValidationError) as err:
        enroll(root, directory, decisions)
    text = str(err.value)
    for line, what in [(2, "not one of"), (3, "not a known individual"), (4, "already a gallery photo"),
                       (5, "no photo 'nope'"), (6, "already a known individual"), (7, "decided again")]:  # fmt: skip
        assert f"bad.csv:{line}: " in text and what in text
    assert active_version(directory) == 0 and not directory.exists()
    (tmp_path / "cols.csv").write_text("image_id,decision\nq1,accept\n")
    with pytest.raises(DataValidationError, match=r"cols.csv:1: missing column\(s\) \['dataset', 'identity'\]"):
        enroll(root, directory, tmp_path / "cols.csv")


def test_enrolled_queries_leave_the_solution_check(tmp_path):
    solution = [{"image_id": q, "identity": "ann", "dataset": "D", "new": "False"} for q in ("q1", "q2", "q3", "q<4>")]
    root = write_dataset(tmp_path / "data", ROWS, solution)
    directory = enrollment_dir(tmp_path / "enrollment", root)
    enroll(root, directory, _decisions(tmp_path / "d.csv", [["D", "q1", "accept", "ann", "ann"]]))
    changes = active_changes_file(directory)
    tables = build_tables(root, ["D"], stats_dir=tmp_path / "stats", enrollment=changes)
    tables["D"].to_csv(tmp_path / "D.tsv", sep="\t", index=False)
    assert check_solution_file(root, [tmp_path / "D.tsv"]) == {"queries": 3, "new": 0, "known": 3}


def test_enrolled_queries_are_not_scored(tmp_path):
    from workflow.evaluate import main as evaluate

    solution = [{"image_id": q, "identity": "ann", "dataset": "D", "new": "False"} for q in ("q1", "q2", "q3", "q<4>")]
    root = write_dataset(tmp_path / "data", ROWS, solution)
    directory = enrollment_dir(tmp_path / "enrollment", root)
    enroll(root, directory, _decisions(tmp_path / "d.csv", [["D", "q1", "accept", "ann", "ann"]]))
    table = build_tables(root, ["D"], stats_dir=tmp_path / "stats", enrollment=active_changes_file(directory))["D"]
    table.to_csv(tmp_path / "D.tsv", sep="\t", index=False)
    queries = ["q2", "q3", "q<4>"]
    pd.DataFrame({"image_id": queries, "identity": "ann"}).to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    out = tmp_path / "scores.tsv"
    evaluate(["score", "--stage", "s", "--predictions", str(tmp_path / "p.tsv"), "--metadata", str(tmp_path / "D.tsv"),
              "--solution", str(root / "solution.csv"), "--out", str(out)])  # fmt: skip
    assert pd.read_csv(out, sep="\t").set_index("dataset").at["D", "BAKS"] == 1.0
