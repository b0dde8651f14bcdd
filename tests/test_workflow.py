"""Workflow-level checks: formatting, lint, dry-runs, a full tiny run, the report, and bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import DOGFACENET, REPO
from workflow_helpers import make_workdir, snakemake

TINY = str(REPO / "tests" / "configs" / "tiny.yaml")


def test_snakefmt_clean():
    exe = Path(sys.executable).parent / "snakefmt"
    proc = subprocess.run([str(exe), "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lint_clean():
    proc = snakemake(REPO, "--lint")
    assert "Congratulations" in proc.stdout + proc.stderr


def test_dry_run_demo_plans_every_stage(tmp_path):
    work = make_workdir(tmp_path)
    proc = snakemake(work, "-n", "--quiet", "rules")
    out = proc.stdout
    # the demo's overlay is named at every start, so an edit of config/config.yaml that it overrides is explained
    assert "Demo data: config/demo.yaml is applied on top of config/config.yaml" in proc.stdout + proc.stderr
    rules = ["demo_data", "validate_data", "embed", "baseline", "score_stage", "scores_table", "submission"]
    rules += ["shortlist", "extract_features", "match_shard", "calibrate", "wildfusion"]
    rules += ["rerank", "xgboost_train", "xgboost", "dual_backbone_train", "dual_backbone", "cascade"]
    for rule in rules:
        assert rule in out, f"{rule} missing from the dry-run:\n{out}"


def test_missing_data_root_is_a_clear_error(tmp_path):
    work = make_workdir(tmp_path / "w")
    proc = snakemake(work, "-n", "--config", f"data_root={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode != 0
    assert "metadata.csv does not exist" in proc.stdout + proc.stderr


def test_cascade_without_steps_for_a_dataset_is_a_clear_error(tmp_path):
    work = make_workdir(tmp_path / "w")
    tiny = Path(TINY).read_text()
    assert "cascade:\n  default:\n" in tiny
    config = tmp_path / "no_default.yaml"  # the tiny config whose cascade names the lynx only
    config.write_text(tiny.replace("cascade:\n  default:\n", "cascade:\n  default: null\n  LynxTiny:\n"))
    proc = snakemake(work, "-n", "--configfile", str(config), check=False)
    assert proc.returncode != 0
    assert "no steps for dataset 'SalamanderTiny'" in proc.stdout + proc.stderr
    assert "cascade.SalamanderTiny" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("tiny"))
    snakemake(work, "--cores", "2", "--configfile", TINY)
    return work


@pytest.mark.slow
def test_tiny_demo_end_to_end(tiny_run):
    work = tiny_run
    sub = pd.read_csv(work / "results/submission.csv", dtype=str, keep_default_na=False)
    meta = pd.read_csv(work / "resources/demo/metadata.csv", dtype=str, keep_default_na=False)
    queries = meta.loc[meta["split"] == "query", "image_id"]
    assert list(sub.columns) == ["image_id", "identity"]
    assert sorted(sub["image_id"]) == sorted(queries)
    scores = pd.read_csv(work / "results/scores.tsv", sep="\t")
    assert list(scores.columns) == ["stage", "dataset", "BAKS", "BAUS", "score", "new_share"]
    assert set(scores["dataset"]) == {"LynxTiny", "SalamanderTiny", "TurtleTiny", "ALL"}
    assert scores["stage"].unique().tolist() == [
        "baseline",
        "wildfusion",
        "rerank",
        "xgboost",
        "dual_backbone",
        "cascade",
    ]
    assert scores["score"].between(0, 1).all()
    # re-ranking is configured for the lynx only: the other datasets pass the WildFusion scores through
    for ds in ["SalamanderTiny", "TurtleTiny"]:
        wf = pd.read_csv(work / f"results/stages/wildfusion/{ds}/predictions.tsv", sep="\t", dtype=str)
        rr = pd.read_csv(work / f"results/stages/rerank/{ds}/predictions.tsv", sep="\t", dtype=str)
        pd.testing.assert_frame_equal(wf, rr)
    cost = json.loads((work / "results/stages/rerank/LynxTiny/cost.json").read_text())
    assert cost["applied"] and cost["extra_pairs_matched"] == 0 and cost["gallery_pairs"] > 0
    (model_meta,) = (work / "results/xgboost/LynxTiny").glob("*/model.json")  # one parameter key
    model = json.loads(model_meta.read_text())
    assert model["info"]["features"] == 1280 + 2 * 5 + len(model["space"]["orientations"]) + 1
    gate = json.loads((work / "results/stages/xgboost/LynxTiny/threshold.json").read_text())
    assert gate["source"] == "auto" and 0 <= gate["threshold"] <= 1
    (db_model,) = (work / "results/dual_backbone/LynxTiny").glob("*/model.pt")  # one parameter key
    assert (db_model.parent / "history.tsv").stat().st_size > 0
    db = json.loads((work / "results/stages/dual_backbone/LynxTiny/threshold.json").read_text())
    assert db["source"] == "auto" and 0 <= db["threshold"] <= 1
    # the submission is the cascade's labels; every label was decided by a configured step
    cascade = pd.concat(
        [
            pd.read_csv(
                work / f"results/stages/cascade/{ds}/predictions.tsv", sep="\t", dtype=str, keep_default_na=False
            )
            for ds in ["LynxTiny", "SalamanderTiny", "TurtleTiny"]
        ]
    )
    assert list(cascade.columns) == ["image_id", "identity", "top_identity", "top_score", "decided_by"]
    assert dict(zip(sub["image_id"], sub["identity"])) == dict(zip(cascade["image_id"], cascade["identity"]))
    assert set(cascade["decided_by"].str.split(":").str[0]) <= {"rerank", "xgboost", "dual_backbone"}
    # the first step's auto threshold is the rerank stage's own
    rr_threshold = json.loads((work / "results/stages/rerank/LynxTiny/threshold.json").read_text())["threshold"]
    assert f'"new_below": {rr_threshold}' in (work / "logs/cascade/LynxTiny.log").read_text()
    for log in ["logs/demo_data.log", "logs/validate_data.log", "logs/baseline/LynxTiny.log"]:
        assert (work / log).stat().st_size > 0, log
    # nothing left to do on a rerun
    assert "Nothing to be done" in snakemake(work, "-n", "--configfile", TINY).stdout


@pytest.mark.slow
def test_tiny_demo_report(tiny_run):
    snakemake(tiny_run, "--configfile", TINY, "--report", "results/report.html")
    html = (tiny_run / "results/report.html").read_text(errors="replace")
    assert "scores.tsv" in html


@pytest.mark.slow
def test_changing_a_threshold_reruns_only_that_stage(tiny_run, tmp_path):
    overlay = tmp_path / "threshold.yaml"
    overlay.write_text("thresholds:\n  baseline: {default: 0.5}\n")
    out = snakemake(tiny_run, "-n", "--quiet", "rules", "--configfile", TINY, str(overlay)).stdout
    planned = {line.split()[0] for line in out.splitlines() if line[:1].isalpha() and line.split()[-1].isdigit()}
    assert "baseline" in planned
    assert not planned & {"embed", "demo_data", "validate_data", "match_shard", "extract_features", "wildfusion"}
    assert not planned & {"rerank", "xgboost_train", "xgboost", "dual_backbone_train", "dual_backbone"}


@pytest.mark.slow
def test_corrupt_image_fails_validation_and_keeps_results(tiny_run, tmp_path):
    work = make_workdir(tmp_path / "bad")
    shutil.copytree(tiny_run / "resources", work / "resources", symlinks=True)
    shutil.copytree(tiny_run / "results", work / "results")
    shutil.copytree(tiny_run / ".snakemake", work / ".snakemake", symlinks=True)
    meta = pd.read_csv(work / "resources/demo/metadata.csv", dtype=str, keep_default_na=False)
    victim = work / "resources/demo" / meta["path"].iloc[3]
    good = victim.read_bytes()
    victim.write_bytes(good[:100])
    before = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
    # the image changed: the start of the workflow reads it again, before any job
    proc = snakemake(work, "--cores", "1", "--configfile", TINY, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"metadata.csv:5: image '{meta['path'].iloc[3]}'" in out and "cannot decode" in out
    assert "no job was started and nothing was deleted" in out
    after = {p: p.stat().st_mtime_ns for p in (work / "results").rglob("*") if p.is_file()}
    assert after == before  # nothing deleted, not even the tables
    victim.write_bytes(good)
    # the copy lives at another path: only the record of the data's real path (gallery_version.json) is written again
    out = snakemake(work, "-n", "--quiet", "rules", "--configfile", TINY).stdout
    planned = {rule for rule, _ in re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M)} - {"total", "all"}
    assert planned <= {"gallery_version"}, out


@pytest.mark.slow
@pytest.mark.skipif(
    not DOGFACENET.is_dir(), reason="../shared/datasets/dogfacenet is absent (only CI and dev machines have it)"
)
def test_real_photos_subset_is_scored(tmp_path):
    """A subset of the real DogFaceNet photos in the AnimalCLEF layout runs and is scored."""
    data = tmp_path / "dogs"
    data.mkdir()
    (data / "images").symlink_to(DOGFACENET / "images")
    meta = pd.read_csv(DOGFACENET / "metadata.csv", dtype=str, keep_default_na=False)
    sol = pd.read_csv(DOGFACENET / "solution.csv", dtype=str, keep_default_na=False)
    gallery = meta[meta["split"] == "database"]
    keep_ids = sorted(gallery["identity"].unique())[:40]
    gal = gallery[gallery["identity"].isin(keep_ids)]
    sol_keep = pd.concat([sol[sol["identity"].isin(keep_ids)], sol[sol["new"] == "True"].head(20)])
    qry = meta[meta["image_id"].isin(sol_keep["image_id"])]
    pd.concat([gal, qry]).to_csv(data / "metadata.csv", index=False)
    sol_keep.to_csv(data / "solution.csv", index=False)
    work = make_workdir(tmp_path / "w")
    overlay = tmp_path / "symlinks.yaml"  # data/images links to the shared photos, outside data_root
    overlay.write_text("data: {allow_external_symlinks: true}\n")
    snakemake(work, "--cores", "2", "--configfile", TINY, str(overlay), "--config", f"data_root={data}")
    scores = pd.read_csv(work / "results/scores.tsv", sep="\t")
    assert set(scores["dataset"]) == {"DogFaceNet", "ALL"}
    assert scores["score"].notna().all()
    # Real photos, inputs times 1 + 1e-6 N(0, 1): the gallery-tuned decisions stay (benchmarks/noise_check.py).
    sys.path.insert(0, str(REPO / "benchmarks"))
    from noise_check import check

    table = check(work, data, noise=1e-6, seeds=2)
    assert (table[[c for c in table.columns if c.endswith("_steps")]] <= 1).all().all(), table.to_string()
    assert not table[[c for c in table.columns if c.endswith(("_flipped", "_changed"))]].any().any(), table
    assert (table[[c for c in table.columns if c.endswith("_score")]] < 0.005).all().all(), table.to_string()


@pytest.mark.slow
def test_killed_matching_resumes_without_redoing_finished_shards(tiny_run, tmp_path):
    """Kill the workflow in the middle of matching; the rerun redoes only the unfinished shards."""
    import os
    import signal
    import time

    work = make_workdir(tmp_path / "kill")
    for name in ["resources", "results", ".snakemake"]:
        shutil.copytree(tiny_run / name, work / name, symlinks=True)
    shards = sorted((work / "results/matches").rglob("shard*.parquet"))
    assert len(shards) >= 4
    # the state before matching: no shard and nothing downstream of them
    downstream = [*(work / "results/calibration").rglob("*.json"), *(work / "results/stages/wildfusion").rglob("*")]
    downstream += [work / "results/scores.tsv", work / "results/submission.csv"]
    for path in [*shards, *downstream]:
        if path.is_file():
            path.unlink()
    env_cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "1", "--configfile", TINY]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.Popen(env_cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    # with one core, jobs run one after another: once a second shard exists the first one's job has ended
    while time.time() < deadline and proc.poll() is None and sum(s.exists() for s in shards) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = sorted((s for s in shards if s.exists()), key=lambda s: s.stat().st_mtime_ns)
    assert 2 <= len(written) < len(shards), "the kill must land in the middle of matching"
    finished = written[:-1]  # the newest may have been killed between its write and Snakemake's bookkeeping
    stamps = {s: s.stat().st_mtime_ns for s in finished}
    assert list((work / ".snakemake/locks").glob("*.lock")), "a killed Snakemake leaves its lock behind"
    # resuming is the command that started the run (profiles/default sets rerun-incomplete; the dead run's
    # lock is removed at the start): no --unlock, no extra flag
    dry = snakemake(work, "-n", "--quiet", "rules", "--configfile", TINY)
    assert "Removed the directory lock left by a Snakemake run that is no longer alive" in dry.stdout + dry.stderr
    planned = next(int(line.split()[1]) for line in dry.stdout.splitlines() if line.startswith("match_shard"))
    assert planned in (len(shards) - len(written), len(shards) - len(written) + 1)
    snakemake(work, "--cores", "2", "--configfile", TINY)
    assert all(s.stat().st_mtime_ns == stamps[s] for s in finished)
    resumed = (work / "results/submission.csv").read_text()
    assert resumed == (tiny_run / "results/submission.csv").read_text()
