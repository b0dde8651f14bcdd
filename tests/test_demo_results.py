"""The demo as `make demo` runs it: the tables the docs print, its promises, and decisions that do not flip on noise.

One full demo run (every stage, about 6 minutes on 2 cores) serves every test here.
"""

from __future__ import annotations

import importlib.util
import sys

import pandas as pd
import pytest
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

pytestmark = pytest.mark.slow


def load_script(name: str, folder: str):
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = make_workdir(tmp_path_factory.mktemp("demo"))
    snakemake(work, "--cores", "2", timeout=3600)
    return work


def test_committed_tables_are_those_of_a_fresh_demo(demo):
    """README.md and docs/benchmarks.md print the demo's scores.tsv and discovery_scores.tsv to 3 decimals."""
    tables = load_script("result_tables", "scripts")
    rendered = tables.render(demo / "results")
    for name in ("README.md", "docs/benchmarks.md"):
        text = (REPO / name).read_text(encoding="utf-8")
        assert tables.replace_blocks(text, rendered) == text, (
            f"{name}: its demo tables differ from this run's results; if the change is intended, run the demo and "
            f"`python scripts/result_tables.py`.\nThis run:\n" + "\n\n".join(rendered.values())
        )


def test_cascade_is_never_below_its_best_single_stage(demo):
    scores = pd.read_csv(demo / "results" / "scores.tsv", sep="\t", keep_default_na=False)
    for dataset, rows in scores[scores["dataset"] != "ALL"].groupby("dataset"):
        by = rows.set_index("stage")["score"]
        singles = by.drop("cascade")
        assert by["cascade"] >= singles.max() - 1e-9, f"{dataset}: cascade {by['cascade']} < {singles.idxmax()}"


@pytest.mark.xfail(
    strict=False,
    reason="known: on the current demo LynxDemo discovery ARI 0.346 is below 'every new photo alone' 0.353 "
    "(the gallery-tuned cut over-merges a 14-individual lynx set); issue 18",
)
def test_discovery_beats_both_trivial_clusterings_on_every_dataset(demo):
    """By more than the 0.005 a decision may move under 1e-6 noise (the noise test's bound)."""
    table = pd.read_csv(demo / "results" / "discovery_scores.tsv", sep="\t", keep_default_na=False)
    by = table.set_index(["stage", "dataset"])["ARI"]
    for dataset in table.loc[table["stage"] == "discovery", "dataset"]:
        if dataset == "ALL":
            continue
        for trivial in ("new_alone", "new_together"):
            assert by[("discovery", dataset)] > by[(trivial, dataset)] + 0.005, (dataset, trivial)


def test_auto_decisions_do_not_flip_on_noise(demo):
    """Embeddings and raw pair scores times 1 + 1e-6 N(0, 1): every gallery-tuned decision stays (threshold within
    one grid step, same on/off choices, same cascade steps) and no query score moves by 0.005 or more."""
    noise = load_script("noise_check", "benchmarks")
    table = noise.check(demo, demo / "resources" / "demo", noise=1e-6, seeds=2)
    assert len(table) == 6, table  # three datasets with a gallery, two seeds
    steps = [c for c in table.columns if c.endswith("_steps")]
    assert (table[steps] <= 1).all().all(), table.to_string()
    flags = [c for c in table.columns if c.endswith(("_flipped", "_changed"))]
    assert not table[flags].any().any(), table.to_string()
    moved = [c for c in table.columns if c.endswith("_score")]
    assert (table[moved] < 0.005).all().all(), table.to_string()
