"""Enrollment of review decisions: gallery versions, their validation, undo, and the tables read through them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_dataset
from workflow_helpers import make_workdir, snakemake

from workflow.data import DataValidationError
from workflow.enrollment import (
    EnrollmentError,
    active_changes_file,
    active_version,
    describe_active,
    enroll,
    enrollment_dir,
    find_enrollment_dir,
    record_data,
    redo,
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
    extra = {"image_id": "q5", "identity": "", "split": "query", "dataset": "D"}  # a query no decision enrolls
    root = write_dataset(tmp_path / "data", [*ROWS, extra])
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
    assert set(table.loc[table["split"] == "query", "image_id"]) == {"q3", "q5"}
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


def test_redo_and_enrolling_the_same_file_again_after_undo(data, tmp_path, monkeypatch):
    import workflow.enrollment as enrollment

    root, directory = data
    first = _decisions(tmp_path / "d.csv", [["D", "q1", "accept", "ann", "ann"], ["D", "q2", "new", "", ""]])
    assert enroll(root, directory, first) == 1
    with pytest.raises(EnrollmentError, match=r"nothing to redo \(no undo led to the active version 1\)"):
        redo(root, directory)
    assert undo(directory) == 0
    assert enroll(root, directory, first) == 1  # the same file again: version 1 is active again, no copy written
    assert sorted(p.name for p in directory.iterdir()) == ["active", "data.json", "log.tsv", "v1"]
    second = _decisions(tmp_path / "e.csv", [["D", "q3", "pick", "bob", "ann"]])
    assert enroll(root, directory, second) == 2
    assert undo(directory) == 1 and undo(directory) == 0
    assert redo(root, directory) == 1 and redo(root, directory) == 2  # back up one version at a time
    third = _decisions(tmp_path / "f.csv", [["D", "q<4>", "new", "zed", ""]])
    assert undo(directory) == 1 and enroll(root, directory, third) == 3
    with pytest.raises(EnrollmentError, match="nothing to redo"):
        redo(root, directory)  # an enrollment after the undo: v2 is not redone over it
    log = pd.read_csv(directory / "log.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert log[["action", "version", "active"]].values.tolist() == [
        ["enroll", "1", "1"], ["undo", "1", "0"], ["redo", "1", "1"], ["enroll", "2", "2"], ["undo", "2", "1"],
        ["undo", "1", "0"], ["redo", "1", "1"], ["redo", "2", "2"], ["undo", "2", "1"], ["enroll", "3", "3"],
    ]  # fmt: skip
    # a version that no longer fits the data is not redone; a killed redo's log line is written as a redo
    assert undo(directory) == 1 and undo(directory) == 0
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    meta[meta["image_id"] != "q1"].to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DataValidationError, match=r"v1/changes.csv:2: enrolled photo 'q1' is no longer"):
        redo(root, directory)
    assert active_version(directory) == 0
    meta.to_csv(root / "metadata.csv", index=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("kill -9")  # the process dies after the switch, before the log line

    with monkeypatch.context() as patch:
        patch.setattr(enrollment, "_log", killed)
        with pytest.raises(KeyboardInterrupt):
            redo(root, directory)
    assert active_version(directory) == 1 and enrollment.recover_log(directory)
    assert pd.read_csv(directory / "log.tsv", sep="\t", dtype=str)["action"].iloc[-1] == "redo"


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


GALLERY_FREE_ROWS = ROWS + [
    {"image_id": "l1", "identity": "", "split": "query", "dataset": "L"},
    {"image_id": "l2", "identity": "", "split": "query", "dataset": "L"},
]


def test_a_gallery_free_dataset_enrolls_and_undoes_with_discovery(tmp_path):
    root = write_dataset(tmp_path / "data", GALLERY_FREE_ROWS)
    directory = enrollment_dir(tmp_path / "enrollment", root)
    decisions = _decisions(tmp_path / "d.csv", [["L", "l1", "new", "liz", "new_individual"],
                                                 ["D", "q1", "accept", "ann", "ann"]])  # fmt: skip
    with pytest.raises(DataValidationError, match=r"metadata.csv:8: dataset 'L' has no database.*enable discovery"):
        enroll(root, directory, decisions)  # without discovery the data check refuses L, as the workflow does
    assert active_version(directory) == 0
    assert enroll(root, directory, decisions, discovery=True) == 1
    tables = build_tables(root, ["D", "L"], stats_dir=tmp_path / "stats", enrollment=active_changes_file(directory),
                          discovery=True)  # fmt: skip
    assert tables["L"].set_index("image_id").loc["l1", ["split", "identity"]].tolist() == ["database", "liz"]
    # a file that would enroll L's last query is refused, naming the file; the active version stays
    last = _decisions(tmp_path / "e.csv", [["L", "l2", "pick", "liz", "liz"]])
    with pytest.raises(DataValidationError, match=r"e.csv: these decisions enroll every remaining query photo of "
                                                  r"dataset 'L'"):  # fmt: skip
        enroll(root, directory, last, discovery=True)
    assert active_version(directory) == 1
    assert sorted(p.name for p in directory.iterdir()) == ["active", "data.json", "log.tsv", "v1"]
    assert undo(directory) == 0


def test_changes_that_break_the_data_name_metadata_rows_and_keep_the_version(data, tmp_path):
    root, directory = data
    enroll(root, directory, _decisions(tmp_path / "d.csv", [["D", "q1", "accept", "ann", "ann"]]))
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    meta[meta["image_id"].isin(["g1", "g2", "q1"])].to_csv(root / "metadata.csv", index=False)  # queries removed
    with pytest.raises(DataValidationError) as err:
        enroll(root, directory, _decisions(tmp_path / "e.csv", [["D", "q2", "accept", "ann", "ann"]]))
    assert "metadata.csv:2: with the enrolled photos of " in str(err.value) and "has no query images" in str(err.value)
    assert "changes.csv:2: " not in str(err.value) and active_version(directory) == 1
    (directory / "v1" / "version.json").unlink()
    with pytest.raises(EnrollmentError, match=r"v1/version.json: cannot read the base version.*into .*active"):
        undo(directory)
    assert active_version(directory) == 1


def test_snakemake_enroll_and_undo_on_a_config_with_a_gallery_free_dataset(tmp_path):
    work = make_workdir(tmp_path / "work")
    write_dataset(work / "data", GALLERY_FREE_ROWS)
    decisions = _decisions(work / "d.csv", [["L", "l1", "new", "liz", ""], ["D", "q1", "accept", "ann", "ann"]])
    stages = "stages=[baseline, wildfusion, discovery]"
    config = ["--config", "data_root=data", stages, "submission={stage: wildfusion}"]
    missing = snakemake(work, "enroll", "--cores", "1", *config, "decisions=nowhere.csv", check=False)
    assert missing.returncode != 0 and "decisions file 'nowhere.csv' not found; looked at " in missing.stderr
    assert "MissingInputException" not in missing.stderr and not (work / "enrollment").exists()
    snakemake(work, "enroll", "--cores", "1", *config, f"decisions={decisions.name}")
    (directory,) = (work / "enrollment").iterdir()
    assert active_version(directory) == 1
    # the next start reads the version (L now has a gallery photo), also with data_root given as an absolute path,
    # names it, and writes it beside the scores
    absolute = ["--config", f"data_root={work / 'data'}", *config[2:]]
    proc = snakemake(work, "--cores", "1", "results/gallery_version.json", *absolute)
    assert "Gallery version 1 of enrollment/data-" in proc.stderr + proc.stdout and "2 photo(s)" in proc.stderr
    table = pd.read_csv(work / "results/data/L.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert table.set_index("image_id").loc["l1", ["split", "identity"]].tolist() == ["database", "liz"]
    described = json.loads((work / "results/gallery_version.json").read_text())
    assert described["gallery_version"] == 1 and described["data_root"] == str((work / "data").resolve())
    snakemake(work, "--report", "report.html", "results/gallery_version.json", *absolute)
    caption = 'literal-block\\">\\nGallery version 1: 2 photo(s)'  # the report's caption names it
    assert caption in (work / "report.html").read_text()
    snakemake(work, "enroll_undo", "--cores", "1", *config)
    assert active_version(directory) == 0
    proc = snakemake(work, "-n", *absolute)
    assert "Gallery version 0: the original" in proc.stdout + proc.stderr
    snakemake(work, "enroll_redo", "--cores", "1", *config)  # the gallery-free L checks with discovery, too
    assert active_version(directory) == 1


def test_versions_are_found_by_the_data_not_the_path_string(data, tmp_path, monkeypatch):
    root, directory = data
    base = tmp_path / "enrollment"
    enroll(root, directory, _decisions(tmp_path / "d.csv", [["D", "q1", "accept", "ann", "ann"]]))
    monkeypatch.chdir(tmp_path / "enrollment")
    for given in ("../data", "../data/", "../enrollment/../data", str(root)):
        assert find_enrollment_dir(base, given) == (directory, "its real path"), given
    (tmp_path / "link").symlink_to(root)
    assert enrollment_dir(base, tmp_path / "link") == directory
    copy = tmp_path / "moved"
    shutil.copytree(root, copy)
    found, how = find_enrollment_dir(base, copy)
    assert found == directory and how.startswith("the fingerprint of metadata.csv")
    assert describe_active(found)["gallery_version"] == 1 and describe_active(found)["enrolled_photos"] == 1
    # a changed metadata.csv is re-fingerprinted at the next start (record_data), so a later move still finds it
    with open(root / "metadata.csv", "a") as fh:
        fh.write("q9,,images/D/query/q9.png,,,dog,query,D\n")
    record_data(directory, root)
    shutil.copytree(root, tmp_path / "moved2")
    assert enrollment_dir(base, tmp_path / "moved2") == directory
    assert enrollment_dir(base, tmp_path / "elsewhere") != directory  # other data: its own, new folder


def test_unsure_is_not_enrolled_and_two_runs_of_a_dataset_are_refused(data, tmp_path):
    root, directory = data
    rows = pd.DataFrame([["D", "q1", "unsure", "", "r1"], ["D", "q2", "accept", "ann", "r1"],
                         ["D", "q3", "reject", "", "r2"]], columns=["dataset", "image_id", "decision", "identity",
                                                                    "run_id"])  # fmt: skip
    rows.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(DataValidationError, match=r"mixed.csv:4: decisions of 2 review pages \(runs\) of dataset 'D'"):
        enroll(root, directory, tmp_path / "mixed.csv")
    assert active_version(directory) == 0
    rows.assign(run_id="r1").to_csv(tmp_path / "one.csv", index=False)
    assert enroll(root, directory, tmp_path / "one.csv") == 1
    gallery = pd.read_csv(directory / "v1" / "metadata.csv", dtype=str, keep_default_na=False).set_index("image_id")
    assert gallery.loc[["q1", "q2", "q3"], "split"].tolist() == ["query", "database", "query"]


def test_the_decisions_file_is_found_in_the_downloads_folder_or_the_error_says_where(tmp_path, monkeypatch):
    from workflow.enrollment_find import download_dirs, locate_decisions

    home, work = tmp_path / "home", tmp_path / "work"
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "user-dirs.dirs").write_text('XDG_DOWNLOAD_DIR="$HOME/Telechargements"\n')
    work.mkdir()
    monkeypatch.chdir(work)
    assert download_dirs({}, home) == [home / "Telechargements", home / "Downloads"]
    found, error = locate_decisions("review-D-decisions.csv", {}, home)
    assert found is None
    for where in (work / "review-D-decisions.csv", home / "Telechargements" / "review-D-decisions.csv",
                  home / "Downloads" / "review-D-decisions.csv"):  # fmt: skip
        assert str(where) in error
    assert "Save the CSV the review page downloads" in error and "decisions=/full/path/" in error
    (home / "Downloads").mkdir()
    (home / "Downloads" / "review-D-decisions (1).csv").write_text("x")
    assert "similar name: " + str(home / "Downloads" / "review-D-decisions (1).csv") in locate_decisions(
        "review-D-decisions.csv", {}, home)[1]  # fmt: skip
    (home / "Downloads" / "review-D-decisions.csv").write_text("x")
    assert locate_decisions("review-D-decisions.csv", {}, home)[0] == home / "Downloads" / "review-D-decisions.csv"
    (tmp_path / "xdg").mkdir()
    (tmp_path / "xdg" / "review-D-decisions.csv").write_text("x")
    env = {"XDG_DOWNLOAD_DIR": str(tmp_path / "xdg")}
    assert locate_decisions("review-D-decisions.csv", env, home)[0] == tmp_path / "xdg" / "review-D-decisions.csv"
    (work / "review-D-decisions.csv").write_text("x")
    assert locate_decisions("review-D-decisions.csv", env, home)[0] == Path("review-D-decisions.csv")
