"""Parameter-addressed outputs: which jobs a dry-run plans after editing (and reverting) one parameter."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

TINY = str(REPO / "tests" / "configs" / "tiny.yaml")
DATASETS = 3  # LynxTiny, SalamanderTiny, TurtleTiny
SHARDS = 2  # wildfusion.shards of the tiny config
KEYED = ["embeddings", "shortlist", "features", "matches", "calibration", "xgboost", "dual_backbone"]
# figures of the report (rules/report.smk, checked by tests/test_plots.py) and the review pages (rules/review.smk,
# tests/test_review*.py): left out of the plans compared here
REPORT_RULES = ("plot_new_share", "plot_matches", "scores_html", "review")
# the tiny config's rootsift options with one edit
ROOTSIFT_EDIT = "matchers:\n  rootsift: {resize: 96, max_keypoints: 100}\n"


def planned(work: Path, *configfiles: str) -> dict[str, int]:
    """The job-count table of ``snakemake -n --quiet rules`` ({} when there is nothing to do)."""
    out = snakemake(work, "-n", "--quiet", "rules", "--configfile", TINY, *configfiles).stdout
    rows = re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)
    return {rule: int(n) for rule, n in rows if rule not in ("total", "all", *REPORT_RULES)}


def overlay(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def keyed_files(work: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for d in KEYED for p in (work / "results" / d).rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_done(tmp_path_factory):
    """A complete tiny run (of its own: the tests below run edits in it)."""
    work = make_workdir(tmp_path_factory.mktemp("partial"))
    snakemake(work, "--cores", "2", "--configfile", TINY)
    assert planned(work) == {}
    return work


def test_keys_are_directory_levels(tiny_done):
    key = re.compile(r"^[0-9a-f]{10}$")
    for path in (tiny_done / "results/matches").rglob("shard*.parquet"):
        assert key.match(path.parent.name), path
    for pattern in ["features/*/*/*.tsv", "calibration/*/*/*.json", "embeddings/*/*/*.npz", "xgboost/*/*/model.ubj",
                    "dual_backbone/*/*/model.pt"]:  # fmt: skip
        found = list((tiny_done / "results").glob(pattern))
        assert found and all(key.match(p.name.split(".")[0] if p.suffix not in (".ubj", ".pt") else p.parent.name)
                             for p in found)  # fmt: skip


@pytest.mark.slow
def test_threshold_edit_reruns_only_the_stage_and_its_scores(tiny_done, tmp_path):
    # the rerank threshold: rerank, the XGBoost gate over its labels, the cascade (the submission stage of the
    # tiny config) that starts from them, their scores, the table and the submission
    plan = planned(tiny_done, overlay(tmp_path, "rr.yaml", "thresholds:\n  rerank: {default: 0.5}\n"))
    assert plan == {"rerank": DATASETS, "xgboost": DATASETS, "cascade": DATASETS, "score_stage": 3,
                    "scores_table": 1, "submission": 1}  # fmt: skip
    # the XGBoost gate's threshold: only the gate (not the model), the cascade, their scores and the table
    plan = planned(tiny_done, overlay(tmp_path, "xgb.yaml", "thresholds:\n  xgboost: {default: 0.5}\n"))
    assert plan == {"xgboost": DATASETS, "cascade": DATASETS, "score_stage": 2, "scores_table": 1, "submission": 1}
    plan = planned(tiny_done, overlay(tmp_path, "wf.yaml", "thresholds:\n  wildfusion: {default: 0.5}\n"))
    assert plan == {"wildfusion": DATASETS, "rerank": DATASETS, "xgboost": DATASETS, "cascade": DATASETS,
                    "score_stage": 4, "scores_table": 1, "submission": 1}  # fmt: skip
    # the dual-backbone threshold: not the model, only its stage, the cascade, their scores and the table
    plan = planned(tiny_done, overlay(tmp_path, "db.yaml", "thresholds:\n  dual_backbone: {default: 0.5}\n"))
    assert plan == {"dual_backbone": DATASETS, "cascade": DATASETS, "score_stage": 2, "scores_table": 1,
                    "submission": 1}  # fmt: skip
    # a cascade step: only the cascade, its scores, the table and the submission
    steps = "cascade:\n  default:\n    - {source: rerank, new_below: auto}\n"
    plan = planned(tiny_done, overlay(tmp_path, "cascade.yaml", steps))
    assert plan == {"cascade": DATASETS, "score_stage": 1, "scores_table": 1, "submission": 1}


@pytest.mark.slow
def test_matcher_edit_reruns_only_that_matcher_then_revert_reuses(tiny_done, tmp_path):
    edit = overlay(tmp_path, "rootsift.yaml", ROOTSIFT_EDIT)
    expected = {
        "extract_features": DATASETS,
        "match_shard": DATASETS * SHARDS,
        "calibrate": DATASETS,  # rootsift's only: cosine and akaze keep their keys
        "wildfusion": DATASETS,
        "rerank": DATASETS,
        "xgboost": DATASETS,
        "cascade": DATASETS,
        "score_stage": 4,  # wildfusion, rerank, xgboost, cascade (not the baseline or dual_backbone)
        "scores_table": 1,
        "submission": 1,  # from the cascade stage in the tiny config
    }
    assert planned(tiny_done, edit) == expected

    work = make_workdir(tmp_path / "edit")  # a copy, so that the module's run stays as it was
    for name in ["resources", "results", ".snakemake"]:
        shutil.copytree(tiny_done / name, work / name, symlinks=True)
    before = keyed_files(work)
    snakemake(work, "--cores", "2", "--configfile", TINY, edit)
    after = keyed_files(work)
    assert all(after[p] == t for p, t in before.items()), "keyed outputs of the original config were rewritten"
    new = sorted(str(p.relative_to(work / "results")) for p in set(after) - set(before))
    assert new and all("/rootsift/" in p for p in new), new
    assert len([p for p in new if p.startswith("matches/") and p.endswith(".parquet")]) == DATASETS * SHARDS

    # revert: every keyed output of the original config is found again; only the unkeyed stages rerun
    plan = planned(work)
    assert not plan.keys() & {"embed", "shortlist", "extract_features", "match_shard", "calibrate", "xgboost_train"}
    assert plan == {k: v for k, v in expected.items() if k not in ("extract_features", "match_shard", "calibrate")}
    snakemake(work, "--cores", "2", "--configfile", TINY)
    assert all(keyed_files(work)[p] == t for p, t in before.items())
    assert (work / "results/submission.csv").read_text() == (tiny_done / "results/submission.csv").read_text()
    assert planned(work) == {}


def test_a_stale_key_is_refused(tmp_path):
    work = make_workdir(tmp_path)
    proc = snakemake(work, "-n", "results/features/LynxTiny/rootsift/0000000000.tsv", "--configfile", TINY,
                     check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "is not that of the current config" in proc.stdout + proc.stderr
