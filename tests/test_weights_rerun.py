"""Replaced weights rerun exactly what was computed from them: the embedding, the dual-backbone, a learned matcher.

One tiny run (baseline and dual_backbone, one dataset) whose baseline backbone loads a local checkpoint; the test
puts other weights at the same path and checks the plan of a dry-run. The learned matcher's weights are checked
on the plan alone (its keyed outputs move to a new key), without running it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

TINY = REPO / "tests" / "configs" / "tiny.yaml"
pytestmark = pytest.mark.slow


def save_weights(path: Path, seed: int) -> None:
    import timm
    import torch

    torch.manual_seed(seed)
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), path)


def plan(work: Path, *extra: str) -> tuple[dict[str, int], str]:
    proc = snakemake(work, "-n", "--configfile", "weights.yaml", *extra)
    stats = proc.stdout.split("Job stats:", 1)[1].strip().split("\n\n")[0] if "Job stats:" in proc.stdout else ""
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}
    return {r: n for r, n in counts.items() if r not in ("total", "all")}, proc.stdout


@pytest.fixture(scope="module")
def weights_run(tmp_path_factory):
    from workflow.demo.cli import main as make_demo

    root = tmp_path_factory.mktemp("weights")
    data = root / "data"
    tiny = yaml.safe_load(TINY.read_text())
    tiny["demo"]["datasets"] = tiny["demo"]["datasets"][:1]
    make_demo(["--config", json.dumps(tiny["demo"]), "--out", str(data)])
    weights = root / "backbone.pt"
    save_weights(weights, seed=0)
    ckpt = {"source": f"checkpoint:{weights}", "arch": "resnet10t", "input_size": 64, "batch_size": 16}
    config = {**tiny, "data_root": str(data), "stages": ["baseline", "dual_backbone"],
              "submission": {"stage": "baseline"}, "cascade": {"default": None},
              "backbones": {**tiny["backbones"], "ckpt": ckpt}, "baseline": {"backbone": "ckpt"},
              "shortlist": {**tiny["shortlist"], "backbone": "ckpt"},
              "dual_backbone": {**tiny["dual_backbone"], "backbones": ["ckpt", "resnet10t"]}}  # fmt: skip
    work = make_workdir(root / "work")
    (work / "weights.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2", "--configfile", "weights.yaml")
    assert plan(work)[0] == {}
    return work, weights


def test_replaced_backbone_weights_rerun_the_embedding_and_the_dual_backbone(weights_run):
    work, weights = weights_run
    original = weights.read_bytes()
    try:
        save_weights(weights, seed=1)  # other weights at the same path
        jobs, _ = plan(work)
        assert {"embed", "dual_backbone_train", "dual_backbone", "baseline"} <= set(jobs), jobs
        # the backbones that did not change keep their embeddings
        assert jobs["embed"] == 1, jobs
    finally:
        weights.write_bytes(original)
    assert plan(work)[0] == {}  # the original weights: every result is current again


def test_replaced_matcher_weights_move_its_keyed_outputs(weights_run, tmp_path):
    work, _ = weights_run
    extractor, matching = tmp_path / "superpoint.pth", tmp_path / "lightglue.pth"
    extractor.write_bytes(b"superpoint weights")
    matching.write_bytes(b"lightglue weights")
    learned = {"extractor_weights": str(extractor), "weights": str(matching)}
    overlay = {"stages": ["baseline", "wildfusion"], "wildfusion": {"matchers": ["superpoint-lightglue"], "shards": 1},
               "matchers": {"superpoint-lightglue": learned}}  # fmt: skip
    (work / "matcher.yaml").write_text(yaml.safe_dump(overlay))
    extra = ["--configfile", "weights.yaml", "matcher.yaml"]

    def keyed(stdout: str) -> set[str]:
        return set(re.findall(r"results/(?:features|matches)/[^\s,;]+", stdout))

    before = keyed(plan(work, *extra)[1])
    assert any("/features/" in p for p in before) and any("/matches/" in p for p in before), before
    matching.write_bytes(b"other lightglue weights")
    after = keyed(plan(work, *extra)[1])
    assert {p for p in after if "/features/" in p} == {p for p in before if "/features/" in p}
    assert not {p for p in after if "/matches/" in p} & before
    extractor.write_bytes(b"other superpoint weights")
    assert not keyed(plan(work, *extra)[1]) & after
