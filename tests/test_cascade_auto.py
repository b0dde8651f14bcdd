"""The gallery-chosen decisions: pseudo tables, ``cascade: auto``, ``rerank.datasets: auto``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow.cascade import run_cascade
from workflow.cascade_auto import align, apply_steps, choose_cascade, evaluate, held_out_check, subset
from workflow.metrics import score_predictions
from workflow.rerank import choose_rerank
from workflow.thresholds import PSEUDO_COLUMNS, pseudo_splits, pseudo_table, tune_threshold

TUNING = {"seed": 0, "repeats": 4, "new_fraction": 0.33, "query_fraction": 0.3}


def gallery(n_images=300, n_ids=50, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"ind{k}" for k in rng.integers(0, n_ids, n_images)], object)
    return np.array([f"img{k}" for k in range(n_images)], object), ids


def noisy_source(ids, image_ids, accuracy, seed, separation=0.3):
    """A pseudo table whose known pseudo-queries are right with probability ``accuracy``, scored higher when right."""
    rng = np.random.default_rng(seed)

    def predict(i, split):
        names = np.array(sorted(set(ids[split.gallery])), object)
        truth = ids[split.query]
        right = ~split.is_new & (rng.random(len(truth)) < accuracy)
        wrong = names[rng.integers(0, len(names), len(truth))]
        score = np.where(right, rng.normal(0.5 + separation, 0.1, len(truth)), rng.normal(0.5, 0.1, len(truth)))
        return np.where(right, truth, wrong), score

    return pseudo_table(pseudo_splits(ids, TUNING), image_ids, ids, predict)


def test_pseudo_splits_are_those_of_threshold_tuning():
    _, ids = gallery()
    seen = []

    def scorer(query, gal):
        seen.append((np.sort(query), np.sort(gal)))
        return ids[np.resize(gal, len(query))], np.zeros(len(query))

    tune_threshold(scorer, ids, repeats=4, seed=0, new_fraction=0.33, query_fraction=0.3)
    splits = pseudo_splits(ids, TUNING)
    assert len(splits) == 4
    for (q, g), split in zip(seen, splits):
        assert np.array_equal(q, np.sort(split.query)) and np.array_equal(g, np.sort(split.gallery))
    assert [np.array_equal(a.query, b.query) for a, b in zip(pseudo_splits(ids, TUNING, 2), splits)] == [True, True]


def test_pseudo_table_columns_and_missing_predictions():
    image_ids, ids = gallery(60, 10)
    table = pseudo_table(pseudo_splits(ids, TUNING, 2), image_ids, ids,
                         lambda i, s: (np.full(len(s.query), ""), np.full(len(s.query), 0.9)))  # fmt: skip
    assert list(table.columns) == PSEUDO_COLUMNS
    assert set(table["split"]) == {0, 1}
    assert np.isneginf(table["score"]).all()  # no identity -> -inf
    assert table["is_new"].dtype == bool and table["image_id"].map(type).eq(str).all()


def test_evaluator_equals_run_cascade_and_the_metric():
    image_ids, ids = gallery()
    tables = {"wildfusion": noisy_source(ids, image_ids, 0.7, 1), "rerank": noisy_source(ids, image_ids, 0.5, 2)}
    steps = [{"source": "rerank", "new_below": 0.6}, {"source": "wildfusion", "override_at_or_above": 0.75,
                                                        "new_below": 0.4}]  # fmt: skip
    data = align(tables)
    fast = evaluate(data, apply_steps(data, steps))["score"]
    slow = []
    for split, part in tables["wildfusion"].sort_values(["split", "image_id"]).groupby("split"):
        sources = {n: t[t["split"] == split].rename(columns={"identity": "top_identity", "score": "top_score"})
                   for n, t in tables.items()}  # fmt: skip
        out = run_cascade(steps, sources).set_index("image_id").reindex(part["image_id"])
        slow.append(score_predictions(part["truth"], out["identity"], part["is_new"].to_numpy(bool))["score"])
    assert fast == pytest.approx(np.mean(slow), abs=1e-9)


def test_auto_cascade_is_not_below_a_clearly_better_stage():
    image_ids, ids = gallery()
    tables = {
        "baseline": noisy_source(ids, image_ids, 0.2, 1, separation=0.0),  # no signal at all
        "wildfusion": noisy_source(ids, image_ids, 0.9, 2),  # clearly the best
        "rerank": noisy_source(ids, image_ids, 0.4, 3, separation=0.1),
    }
    steps, report = choose_cascade(tables, grid_size=11)
    singles = {n: r["score"] for n, r in report["single_stages"].items()}
    assert max(singles, key=singles.get) == report["best_single_stage"] == "wildfusion"
    assert report["simulated"]["score"] >= singles["wildfusion"] - 1e-9
    assert report["splits"] == 4 and steps
    # single stage only: exactly the best stage at its own best threshold
    steps1, report1 = choose_cascade(tables, grid_size=11, max_steps=1)
    assert [s["source"] for s in steps1] == ["wildfusion"]
    assert report1["simulated"]["score"] == pytest.approx(singles["wildfusion"])
    # the chosen steps reproduce the reported score
    data = align(tables)
    assert evaluate(data, apply_steps(data, steps))["score"] == pytest.approx(report["simulated"]["score"], abs=1e-6)


def test_held_out_check_scores_the_other_half():
    image_ids, ids = gallery()
    tables = {"wildfusion": noisy_source(ids, image_ids, 0.9, 2), "rerank": noisy_source(ids, image_ids, 0.4, 3)}
    data = align(tables)
    steps = [{"source": "wildfusion", "new_below": 0.7}]
    odd = subset(data, np.array([1, 3]))
    per_split = [evaluate(subset(data, np.array([i])), apply_steps(subset(data, np.array([i])), steps))["score"]
                 for i in (1, 3)]  # fmt: skip
    assert odd.n_splits == 2 and evaluate(odd, apply_steps(odd, steps))["score"] == pytest.approx(np.mean(per_split))
    check = held_out_check(data, 11, 0.002, 3)
    assert check["single_stage"] == "wildfusion" and 0 < check["held_out_score"] <= 1
    _, report = choose_cascade(tables, grid_size=11)
    assert report["held_out_check"] == check


def test_auto_cascade_leaves_out_a_source_on_fewer_splits():
    """A trained source simulated on fewer splits would cut every comparison to its splits: it is left out."""
    image_ids, ids = gallery()
    full = noisy_source(ids, image_ids, 0.8, 1)
    trained = full[full["split"] < 2]  # a trained source with fewer splits
    steps, report = choose_cascade({"wildfusion": full, "xgboost": trained}, grid_size=5)
    assert report["splits"] == full["split"].nunique() and set(report["left_out"]) == {"xgboost"}
    assert {step["source"] for step in steps} == {"wildfusion"}
    _, report = choose_cascade({"wildfusion": full, "xgboost": full.copy()}, grid_size=5)
    assert not report["left_out"] and set(report["single_stages"]) == {"wildfusion", "xgboost"}
    with pytest.raises(ValueError, match="same pseudo-queries"):
        align({"wildfusion": full, "rerank": full.assign(truth=full["truth"].sample(frac=1, random_state=0).values)})


def rerank_case(reranked_better: bool):
    """Gallery pairs of 40 individuals x 4 images; one score is informative, the other is noise."""
    ids = np.repeat([f"ind{i}" for i in range(40)], 4).astype(object)
    names = np.array([f"g{i}" for i in range(len(ids))], object)
    meta = pd.DataFrame({"image_id": names, "identity": ids, "split": "database"})
    rng = np.random.default_rng(0)
    q, c = np.meshgrid(np.arange(len(ids)), np.arange(len(ids)), indexing="ij")
    keep = q != c
    q, c = q[keep], c[keep]
    same = ids[q] == ids[c]
    good = np.where(same, rng.uniform(0.5, 1.0, len(q)), rng.uniform(0.0, 0.6, len(q)))
    noise = rng.uniform(0, 1, len(q))
    pairs = pd.DataFrame({"query": names[q], "candidate": names[c], "kind": "gallery"})
    fused, reranked = (noise, good) if reranked_better else (good, noise)
    return meta, pairs, fused, reranked


@pytest.mark.parametrize("reranked_better", [True, False])
def test_rerank_auto_applies_only_when_it_helps_on_the_gallery(reranked_better):
    meta, pairs, fused, reranked = rerank_case(reranked_better)
    applied, choice = choose_rerank(meta, pairs, fused, reranked, {**TUNING, "grid_size": 21})
    assert applied is reranked_better
    assert (choice["rerank_score"] > choice["wildfusion_score"]) is reranked_better


@pytest.mark.slow
def test_auto_choices_never_read_the_query_truth(tmp_path):
    """The same data with a shuffled solution.csv gives the same submission and the same auto choices."""
    import json
    import shutil

    import yaml
    from conftest import REPO
    from workflow_helpers import make_workdir, snakemake

    tiny = str(REPO / "tests" / "configs" / "tiny.yaml")
    gen = make_workdir(tmp_path / "gen")
    snakemake(gen, "resources/demo/metadata.csv", "--cores", "1", "--configfile", tiny, timeout=1200)
    overlay = tmp_path / "auto.yaml"
    overlay.write_text(yaml.safe_dump({
        "stages": ["baseline", "wildfusion", "rerank", "xgboost", "cascade"],
        "rerank": {"datasets": "auto"}, "cascade": {"default": "auto"},
        "threshold_tuning": {"trained_repeats": 1}, "cascade_auto": {"grid_size": 5},
    }))  # fmt: skip
    outputs = {}
    for variant in ("truth", "shuffled"):
        data = tmp_path / f"data_{variant}"
        shutil.copytree(gen / "resources" / "demo", data)
        if variant == "shuffled":
            sol = pd.read_csv(data / "solution.csv", dtype=str, keep_default_na=False)
            rng = np.random.default_rng(1)
            for column in ("identity", "new"):
                sol[column] = sol[column].to_numpy()[rng.permutation(len(sol))]
            sol.to_csv(data / "solution.csv", index=False)
        work = make_workdir(tmp_path / f"work_{variant}")
        snakemake(work, "results/submission.csv", "--cores", "2", "--configfile", tiny, str(overlay),
                  "--config", f"data_root={data}", timeout=2400)  # fmt: skip
        choices = {p.parent.name: json.loads(p.read_text()) for p in work.glob("results/stages/cascade/*/choice.json")}
        reranks = {
            p.parent.name: json.loads(p.read_text())["applied"] for p in work.glob("results/stages/rerank/*/cost.json")
        }
        outputs[variant] = ((work / "results" / "submission.csv").read_text(), choices, reranks)
    assert outputs["truth"] == outputs["shuffled"]
    submission, choices, reranks = outputs["truth"]
    assert len(choices) == 3 and all(c["mode"] == "auto" and c["steps"] for c in choices.values())
    for choice in choices.values():
        # never below its single stage (the simplest within the spread of the best: robust.prefer_simpler)
        best = choice["single_stages"][choice["best_single_stage"]]["score"]
        assert choice["simulated"]["score"] >= best - 1e-9
    # xgboost trains its auxiliary model on fewer splits (trained_repeats) and is left out of the search
    assert set(choice["single_stages"]) | set(choice["left_out"]) == {"baseline", "wildfusion", "rerank", "xgboost"}


def test_agreement_first_step_is_chosen_when_agreement_separates_known_from_new():
    """Two sources whose scores overlap for known and new pseudo-queries but whose identities agree only for
    known ones: no threshold or override separates them, the agreement step does."""
    rng = np.random.default_rng(0)
    rows = {"a": [], "b": []}
    for split in range(4):
        for i in range(200):
            truth = f"id{i % 40}"
            is_new = i % 3 == 0
            score_a, score_b = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
            if is_new:
                ident_a, ident_b = f"id{rng.integers(40)}", f"x{rng.integers(40)}"  # wrong, and disagreeing
            else:
                ident_a = ident_b = truth
            for name, ident, score in (("a", ident_a, score_a), ("b", ident_b, score_b)):
                rows[name].append({"split": split, "image_id": f"q{i}", "identity": ident, "score": score,
                                   "truth": truth, "is_new": is_new})  # fmt: skip
    tables = {name: pd.DataFrame(r) for name, r in rows.items()}
    steps, report = choose_cascade(tables, grid_size=11)
    assert "agree_with" in steps[0]
    assert report["simulated"]["score"] > 0.99
    assert max(s["score"] for s in report["single_stages"].values()) < 0.9
    data = align(tables)
    assert evaluate(data, apply_steps(data, steps))["score"] == pytest.approx(report["simulated"]["score"], abs=1e-6)


def test_run_cascade_agreement_step_matches_the_search():
    from workflow.cascade import run_cascade

    a = pd.DataFrame({"image_id": ["1", "2", "3"], "top_identity": ["x", "y", "z"], "top_score": [0.5, 0.5, 0.9]})
    b = pd.DataFrame({"image_id": ["1", "2", "3"], "top_identity": ["x", "w", "q"], "top_score": [0.1, 0.9, 0.9]})
    steps = [{"source": "rerank", "new_below": 0.8, "agree_with": "baseline", "agree_new_below": 0.3}]
    out = run_cascade(steps, {"rerank": a, "baseline": b})
    assert out["identity"].tolist() == ["x", "new_individual", "z"]
