"""Datasets without a gallery (AnimalCLEF 2026's Texas horned lizard): validation, calibration, every stage."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from workflow import NEW_INDIVIDUAL
from workflow.calibration import IsotonicCalibrator
from workflow.data import check_split_coverage, gallery_free_datasets
from workflow.discovery import anchor_labels, cluster_queries, score_rows
from workflow.discovery_calibration import (
    borrowed_threshold,
    fallback_calibrators,
    pool_calibrators,
    rank_calibrator,
    save_calibrators,
)

# ------------------------------------------------------------------------------------------------ validation


def _meta(rows):
    return pd.DataFrame(rows, columns=["dataset", "split"])


def test_a_dataset_without_gallery_fails_without_discovery_and_says_to_enable_it():
    df = _meta([("G", "database"), ("G", "query"), ("Lizard", "query"), ("Lizard", "query")])
    problems = check_split_coverage(df, "metadata.csv")
    assert len(problems) == 1
    text = str(problems[0])
    assert text.startswith("metadata.csv:4: dataset 'Lizard' has no database images (labelled gallery)")
    assert "enable discovery: add discovery to stages" in text
    assert gallery_free_datasets(df) == ["Lizard"]


def test_a_dataset_without_gallery_is_valid_with_discovery(caplog):
    df = _meta([("G", "database"), ("G", "query"), ("Lizard", "query"), ("Lizard", "query")])
    with caplog.at_level(logging.INFO, logger="workflow.data"):
        assert check_split_coverage(df, "metadata.csv", discovery=True) == []
    assert "'Lizard' has no gallery (2 query images" in caplog.text
    assert "discovery clusters its query images from scratch" in caplog.text


def test_discovery_does_not_excuse_a_dataset_without_queries():
    df = _meta([("G", "database"), ("G", "database")])
    problems = check_split_coverage(df, "metadata.csv", discovery=True)
    assert len(problems) == 1 and "has no query images" in str(problems[0])
    assert "enable discovery" not in str(problems[0])


# ------------------------------------------------------------------------------------------------ calibration


def test_pooled_calibrator_is_the_exact_mean_of_the_others():
    a = IsotonicCalibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 3, 5)
    b = IsotonicCalibrator(np.array([0.2, 0.4, 0.8]), np.array([0.0, 0.5, 1.0]), 2, 7)
    pooled = pool_calibrators([a, b])
    x = np.linspace(-0.5, 1.5, 81)
    assert np.allclose(pooled.predict(x), (a.predict(x) + b.predict(x)) / 2)
    assert (pooled.n_pos, pooled.n_neg) == (5, 12)


def test_rank_calibrator_is_the_empirical_cdf():
    cal = rank_calibrator(np.array([3.0, 1.0, 2.0, 2.0, np.nan]))
    assert np.allclose(cal.predict(np.array([0.0, 1.0, 2.0, 3.0, 9.0])), [0.25, 0.25, 0.75, 1.0, 1.0])
    assert np.isnan(cal.predict(np.array([np.nan]))[0])
    assert np.allclose(rank_calibrator(np.array([np.nan])).predict(np.array([5.0])), 0.0)
    assert np.allclose(rank_calibrator(np.array([4.0, 4.0])).predict(np.array([4.0, 7.0])), 1.0)


def test_fallback_calibrators_pool_other_datasets_else_rank(tmp_path):
    raw = pd.DataFrame({"cosine": [0.1, 0.5, 0.9], "rootsift": [0.0, 10.0, 40.0]})
    ident = IsotonicCalibrator(np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    half = IsotonicCalibrator(np.array([0.0, 1.0]), np.array([0.0, 0.5]))
    save_calibrators({"cosine": ident}, {"cosine": "gallery"}, tmp_path / "a.json")
    save_calibrators({"cosine": half}, {"cosine": "refit"}, tmp_path / "b.json")
    cals, origin = fallback_calibrators(["cosine", "rootsift"], [tmp_path / "a.json", tmp_path / "b.json"], raw)
    assert origin == {"cosine": "pooled", "rootsift": "rank"}  # nobody calibrated rootsift: its own ranks
    assert np.allclose(cals["cosine"].predict(np.array([0.8])), 0.6)
    assert np.allclose(cals["rootsift"].predict(np.array([0.0, 10.0, 40.0])), [1 / 3, 2 / 3, 1.0])
    dense = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    cals, origin = fallback_calibrators(["cosine"], [], raw, dense)
    assert origin == {"cosine": "rank"}
    assert np.allclose(cals["cosine"].predict(np.array([0.2, 0.6])), [2 / 6, 1.0])  # off-diagonal ranks


def test_borrowed_threshold(tmp_path):
    for name, value in (("a", 0.4), ("b", 0.6)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"threshold": value, "source": "auto"}))
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    assert borrowed_threshold("auto", files, 0.95)[0] == pytest.approx(0.5)
    assert borrowed_threshold("auto", [], 0.95) == (0.95, {"threshold": 0.95, "source": "discovery.fallback_threshold"})
    assert borrowed_threshold(0.3, files, 0.95)[0] == 0.3


# ------------------------------------------------------------------------------------ clusters and submission


def test_without_gallery_every_query_is_new_and_scored_against_the_trivial_clusterings():
    labels = pd.DataFrame({"image_id": ["1", "2", "3", "4"], "identity": NEW_INDIVIDUAL})
    pairs = pd.DataFrame({"query": ["1", "3"], "candidate": ["2", "4"], "score": [0.9, 0.8]})
    clusters = cluster_queries("Lizard", labels, pairs, 0.5)
    assert clusters["cluster"].tolist() == ["new_Lizard_1", "new_Lizard_1", "new_Lizard_2", "new_Lizard_2"]
    assert not clusters["anchored"].any()
    as_read = clusters.astype(str)
    assert (anchor_labels(as_read)["identity"] == NEW_INDIVIDUAL).all()
    truth = {"1": "a", "2": "a", "3": "b", "4": "b"}
    rows = {r["stage"]: r for r in score_rows("Lizard", as_read, anchor_labels(as_read), truth)}
    assert rows["discovery"]["ARI"] == pytest.approx(1.0)
    assert rows["all_alone"]["ARI"] == pytest.approx(0.0) and rows["new_together"]["ARI"] == pytest.approx(0.0)


def test_submissions_with_a_dataset_without_gallery(tmp_path):
    """results/submission.csv: its queries are new_individual; results/clusters.csv: known ones keep their
    identity, new ones are new_<dataset>_<k> (the AnimalCLEF 2026 format, image_id,cluster)."""
    from workflow.discovery import main as discovery_main
    from workflow.evaluate import main as evaluate_main
    from workflow.stage_io import write_tsv

    cols = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
    known = pd.DataFrame([["g1", "K1", "g1.jpg", "", "", "s", "database", "A"],
                          ["q1", "", "q1.jpg", "", "", "s", "query", "A"],
                          ["q2", "", "q2.jpg", "", "", "s", "query", "A"]], columns=cols)  # fmt: skip
    lizard = pd.DataFrame([[f"z{i}", "", f"z{i}.jpg", "", "", "l", "query", "Lizard"] for i in range(3)], columns=cols)
    write_tsv(known, tmp_path / "A.tsv")
    write_tsv(lizard, tmp_path / "Lizard.tsv")
    write_tsv(pd.DataFrame({"image_id": ["q1", "q2"], "identity": ["K1", NEW_INDIVIDUAL]}), tmp_path / "p.tsv")
    out = tmp_path / "submission.csv"
    evaluate_main(["submission", "--predictions", str(tmp_path / "p.tsv"), "--metadata", str(tmp_path / "A.tsv"),
                   "--no-gallery", str(tmp_path / "Lizard.tsv"), "--out", str(out)])  # fmt: skip
    sub = pd.read_csv(tmp_path / "submission.csv", dtype=str)
    assert sub.to_dict("list") == {"image_id": ["q1", "q2", "z0", "z1", "z2"],
                                   "identity": ["K1", NEW_INDIVIDUAL, *[NEW_INDIVIDUAL] * 3]}  # fmt: skip

    write_tsv(pd.DataFrame({"image_id": ["q1", "q2"], "cluster": ["K1", "new_A_1"], "anchored": [True, False]}),
              tmp_path / "A.clusters.tsv")  # fmt: skip
    write_tsv(pd.DataFrame({"image_id": ["z0", "z1", "z2"], "cluster": ["new_Lizard_1", "new_Lizard_2", "new_Lizard_1"],
                            "anchored": [False] * 3}), tmp_path / "Lizard.clusters.tsv")  # fmt: skip
    discovery_main(["submission", "--clusters", str(tmp_path / "A.clusters.tsv"), str(tmp_path / "Lizard.clusters.tsv"),
                    "--metadata", str(tmp_path / "A.tsv"), str(tmp_path / "Lizard.tsv"),
                    "--out", str(tmp_path / "clusters.csv")])  # fmt: skip
    text = (tmp_path / "clusters.csv").read_text().splitlines()
    assert text == ["image_id,cluster", "q1,K1", "q2,new_A_1", "z0,new_Lizard_1", "z1,new_Lizard_2", "z2,new_Lizard_1"]


# ------------------------------------------------------------------------------------------------ the demo


def test_demo_dataset_without_gallery():
    from workflow.demo.plan import DemoDataset, plan_dataset

    spec = {"name": "LizardX", "species": "horned_lizard", "pattern": "spots", "known_individuals": 0,
            "new_individuals": 3, "gallery_images": 0, "query_images": 8, "distribution": "medium",
            "orientations": ["top"]}  # fmt: skip
    plan = plan_dataset(DemoDataset(**spec), 7)
    assert (plan["split"] == "query").all() and plan["new"].all() and len(plan) == 8
    assert plan["identity"].nunique() == 3
    with pytest.raises(ValueError, match="known_individuals must be an integer >= 1 and gallery_images"):
        DemoDataset(**{**spec, "gallery_images": 5})
    with pytest.raises(ValueError, match="without a gallery needs new_individuals >= 1"):
        DemoDataset(**{**spec, "new_individuals": 0})


def test_the_shipped_demo_has_a_dataset_without_gallery():
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    free = [d for d in config["demo"]["datasets"] if d["known_individuals"] == 0]
    assert [d["name"] for d in free] == ["LizardDemo"]
    assert config["demo"]["datasets"][-1]["name"] == "LizardDemo"  # last: the others keep their image ids


# ------------------------------------------------------------------------------------------------ the workflow

LIZARD = {"name": "LizardTiny", "species": "horned_lizard", "pattern": "spots", "known_individuals": 0,
          "new_individuals": 3, "gallery_images": 0, "query_images": 8, "distribution": "medium",
          "orientations": ["top"], "date_range": None}  # fmt: skip
ALL_STAGES = ["baseline", "wildfusion", "rerank", "xgboost", "dual_backbone", "cascade", "discovery"]


def _overlay(path, datasets, stages, fallback=0.95, **extra):
    tiny = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    keep = [d for d in tiny["demo"]["datasets"] if d["name"] in datasets]
    lizard = [LIZARD] if "LizardTiny" in datasets else []
    overlay = {"stages": stages, "demo": {"datasets": keep + lizard},
               "discovery": {"stage": "cascade", "k": 4, "matchers": ["rootsift"], "shards": 1,
                             "fallback_threshold": fallback}, **extra}  # fmt: skip
    path.write_text(yaml.safe_dump(overlay))
    return ["--configfile", str(REPO / "tests/configs/tiny.yaml"), str(path)]


@pytest.fixture(scope="module")
def lizard_run(tmp_path_factory):
    """The tiny lynx (with a gallery) and a tiny lizard (without) through every stage."""
    from workflow_helpers import make_workdir, snakemake

    base = tmp_path_factory.mktemp("nogallery")
    work = make_workdir(base / "work")
    config = _overlay(base / "overlay.yaml", ["LynxTiny", "LizardTiny"], ALL_STAGES)
    proc = snakemake(work, "--cores", "2", *config, timeout=2400)
    return work, proc


def test_every_stage_with_a_dataset_without_gallery(lizard_run):
    work, proc = lizard_run
    assert "No gallery: LizardTiny" in proc.stdout + proc.stderr
    log = (work / "logs/validate_data.log").read_text()
    assert "'LizardTiny' has no gallery (8 query images" in log
    for stage in ALL_STAGES[:-1]:  # the stages that need identities ran on the lynx only
        assert (work / f"results/stages/{stage}/LynxTiny/predictions.tsv").is_file(), stage
        assert not (work / f"results/stages/{stage}/LizardTiny").exists(), stage
    assert not (work / "results/calibration/LizardTiny").exists()
    meta = pd.read_csv(work / "resources/demo/metadata.csv", dtype=str, keep_default_na=False)
    lizard_q = meta.loc[(meta["dataset"] == "LizardTiny"), "image_id"]
    assert (meta.loc[meta["dataset"] == "LizardTiny", "split"] == "query").all()

    sub = pd.read_csv(work / "results/submission.csv", dtype=str)
    assert sorted(sub["image_id"]) == sorted(meta.loc[meta["split"] == "query", "image_id"])
    assert (sub.set_index("image_id").loc[lizard_q, "identity"] == NEW_INDIVIDUAL).all()
    clusters = pd.read_csv(work / "results/clusters.csv", dtype=str)
    assert list(clusters.columns) == ["image_id", "cluster"]
    assert clusters.set_index("image_id").loc[lizard_q, "cluster"].str.fullmatch(r"new_LizardTiny_\d+").all()

    folder = work / "results/stages/discovery/LizardTiny"
    info = json.loads((folder / "threshold.json").read_text())
    lynx = json.loads((work / "results/stages/discovery/LynxTiny/threshold.json").read_text())
    assert info["source"] == "other datasets (mean)" and info["threshold"] == pytest.approx(lynx["threshold"])
    assert info["gallery"] is False and set(info["calibrators"].values()) == {"pooled"}
    lynx_cal = json.loads((work / "results/stages/discovery/LynxTiny/calibrators.json").read_text())
    assert {s: c["origin"] for s, c in lynx_cal.items()} == {"cosine": "gallery", "rootsift": "gallery"}
    cost = json.loads((folder / "cost.json").read_text())
    assert cost["queries"] == 8 and cost["query_query_pairs"] > 0 and cost["new_photos"] == 8

    scores = pd.read_csv(work / "results/discovery_scores.tsv", sep="\t")
    mine = scores[scores["dataset"] == "LizardTiny"].set_index("stage")
    assert set(mine.index) == {"discovery", "all_alone", "new_alone", "new_together"}
    assert mine["ARI"].notna().all() and mine.loc["discovery", "true_clusters"] == 3
    table = pd.read_csv(work / "results/scores.tsv", sep="\t")  # the per-query stages score the lynx only
    assert set(table["dataset"]) == {"LynxTiny", "ALL"}
    assert (work / "results/plots/discovery/LizardTiny.png").is_file()
    assert not (work / "results/plots/new_share/LizardTiny.png").exists()


def test_without_discovery_the_workflow_refuses_a_dataset_without_gallery(tmp_path):
    from workflow_helpers import make_workdir, snakemake

    work = make_workdir(tmp_path / "w")
    config = _overlay(tmp_path / "o.yaml", ["LynxTiny", "LizardTiny"], ALL_STAGES[:-1])
    proc = snakemake(work, "-n", *config, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "dataset(s) ['LizardTiny'] have no gallery" in text and "Enable discovery" in text
    assert not (work / "results").exists()


def test_only_datasets_without_gallery_use_their_own_ranks(tmp_path):
    """No dataset to borrow from: raw scores rank-normalised, discovery.fallback_threshold, no scores.tsv."""
    from workflow_helpers import make_workdir, snakemake

    work = make_workdir(tmp_path / "w")
    config = _overlay(tmp_path / "o.yaml", ["LizardTiny"], ["discovery"], 0.9, submission={"stage": "baseline"})
    proc = snakemake(work, "--cores", "2", *config)
    assert not re.search(r"^(baseline|wildfusion|calibrate|shortlist)\s", proc.stdout, re.M)
    info = json.loads((work / "results/stages/discovery/LizardTiny/threshold.json").read_text())
    assert info["source"] == "discovery.fallback_threshold" and info["threshold"] == 0.9
    assert set(info["calibrators"].values()) == {"rank"}
    sub = pd.read_csv(work / "results/submission.csv", dtype=str)
    assert (sub["identity"] == NEW_INDIVIDUAL).all() and len(sub) == 8
    assert (work / "results/clusters.csv").is_file() and not (work / "results/scores.tsv").exists()
    scores = pd.read_csv(work / "results/discovery_scores.tsv", sep="\t")
    assert scores.loc[scores["dataset"] == "LizardTiny", "ARI"].notna().all()


# ------------------------------------------------------------------------------------------------ 2026 config


def test_animalclef2026_config_passes_the_start_checks():
    from snakemake.utils import update_config, validate

    from workflow.config_check import check_config

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / "config/animalclef2026.yaml").read_text()))
    validate(config, str(REPO / "config/schema.yaml"))
    check_config(config, REPO / "config/schema.yaml",
                 datasets=["LynxID2025", "SalamanderID2025", "SeaTurtleID2022", "TexasHornedLizards"])  # fmt: skip
    assert "discovery" in config["stages"]
    assert config["backbones"]["megadescriptor"]["source"] == "megadescriptor-l-384"
    assert config["backbones"]["miewid"]["source"] == "miewid-msv3"
    assert set(config["discovery"]["matchers"]) <= set(config["wildfusion"]["matchers"])


def test_animalclef2026_layout_plans_discovery_only_for_the_lizard(tmp_path):
    """A tiny dataset in the 2026 layout (three species with a gallery, the lizard without): a dry-run plans the
    paper's stages for the three and discovery for all four."""
    from workflow_helpers import make_workdir, snakemake

    data = tmp_path / "animalclef2026"
    data.mkdir()
    rows = []
    for dataset in ("LynxID2025", "SalamanderID2025", "SeaTurtleID2022", "TexasHornedLizards"):
        splits = ["query"] * 3 if dataset == "TexasHornedLizards" else ["database"] * 6 + ["query"] * 2
        for k, split in enumerate(splits):
            rows.append({"image_id": f"{dataset}-{k}", "identity": "" if split == "query" else f"{dataset}_{k % 3}",
                         "path": f"images/{dataset}/{k}.jpg", "date": "", "orientation": "", "species": dataset,
                         "split": split, "dataset": dataset})  # fmt: skip
    pd.DataFrame(rows).to_csv(data / "metadata.csv", index=False)
    work = make_workdir(tmp_path / "work")
    proc = snakemake(work, "-n", "--cores", "1", "--configfile", str(REPO / "config/animalclef2026.yaml"),
                     "--config", f"data_root={data}")  # fmt: skip
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, re.M))
    for rule in ("baseline", "wildfusion", "rerank", "xgboost", "dual_backbone", "cascade", "calibrate"):
        assert rule in counts, rule
    assert counts["cascade"] == "3" and counts["discovery"] == "4" and counts["discovery_pairs"] == "4"
    assert counts["calibrate"] == str(3 * 6)  # cosine + five matchers, on the three galleries only
    assert "results/stages/cascade/TexasHornedLizards" not in proc.stdout
    assert "results/clusters.csv" in proc.stdout


# ------------------------------------------------------------------------------- the cosine discovery calibrates


def test_refit_cosine_calibrates_discovery_own_embedding():
    from workflow.discovery_calibration import refit_cosine

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16))
    ids = [f"g{i}" for i in range(40)]
    identity = {g: f"ind{i % 4}" for i, g in enumerate(ids)}
    emb = {}
    for i, g in enumerate(ids):
        v = centres[i % 4] + 0.3 * rng.normal(size=16)
        emb[g] = v / np.linalg.norm(v)
    pairs = [(a, b) for a in ids for b in ids if a < b]
    cal = refit_cosine([a for a, _ in pairs], [b for _, b in pairs], identity, emb)
    assert cal.predict(np.array([0.99]))[0] > 0.9 and cal.predict(np.array([0.0]))[0] < 0.1


def test_a_trained_shortlist_makes_discovery_refit_its_cosine(tmp_path):
    """shortlist.backbone: trained: the WildFusion cosine calibrator is of the trained embedding, discovery's
    query x query cosine is of the baseline's: the discovery job refits the cosine and does not read that one."""
    from workflow_helpers import make_workdir, snakemake

    work = make_workdir(tmp_path / "w")
    config = _overlay(tmp_path / "o.yaml", ["LynxTiny", "LizardTiny"], ALL_STAGES,
                      shortlist={"backbone": "trained", "k_query": 6, "k_gallery": 5})  # fmt: skip
    proc = snakemake(work, "-n", "-p", "--cores", "1", *config, "--", "results/clusters.csv")
    commands = [line for line in proc.stdout.splitlines() if "workflow.discovery cluster" in line]
    assert len(commands) == 2
    lynx = next(c for c in commands if "--dataset LynxTiny" in c)
    assert "--cosine-calibration refit" in lynx and "results/calibration/LynxTiny/cosine/" not in lynx
    assert "results/calibration/LynxTiny/rootsift/" in lynx
    lizard = next(c for c in commands if "--dataset LizardTiny" in c)
    assert "--labels" not in lizard and "--gallery-pairs" not in lizard
    assert "--pooled-calibrators results/stages/discovery/LynxTiny/calibrators.json" in lizard
