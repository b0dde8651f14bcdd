"""The SLURM profiles: option names, GPU routing, and a dry-run of the paper config at the paper's size."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

sys.path.insert(0, str(REPO / "benchmarks"))
from make_paper_metadata import PAPER_SIZES, write_paper_metadata  # noqa: E402

PROFILES = ["slurm", "slurm-local", "default"]
PAPER = REPO / "config" / "animalclef2025.yaml"


def parse_profile(name: str) -> dict:
    """The profile as Snakemake reads it (YTE templating and environment variables included)."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(REPO / "profiles" / name / "config.v8+.yaml") as stream:
        return dict(ProfileConfigFileParser().parse(stream))


def gpu_rules(config_path: Path) -> set[str]:
    """Rules whose ``gpu`` resource (``gpu=compute("<key>", ...)``) is above 0 under a config file."""
    compute = yaml.safe_load(config_path.read_text()).get("compute", {})
    rules = set()
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            head = re.match(r"rule (\w+):", block)
            key = re.search(r"\bgpu=compute\(\s*\"(\w+)\"", block)
            if head and key and compute.get(key.group(1), {}).get("gpu", 0) > 0:
                rules.add(head.group(1))
    return rules


@pytest.mark.parametrize("name", PROFILES)
def test_profile_options_exist(name):
    """Every key of the profile is an option of this Snakemake and its SLURM plugin (typos are not ignored)."""
    from snakemake.cli import get_argument_parser

    options = {opt for action in get_argument_parser()._actions for opt in action.option_strings}
    unknown = [key for key in parse_profile(name) if f"--{key}" not in options]
    assert not unknown, f"profiles/{name}: unknown options {unknown}"


def test_gpu_rules_go_to_the_gpu_partition(monkeypatch):
    monkeypatch.setenv("SLURM_CPU_PARTITION", "all")  # a name that is also a Python builtin
    monkeypatch.setenv("SLURM_GPU_PARTITION", "gpu-a100")
    monkeypatch.setenv("SLURM_ACCOUNT", "lab1")
    profile = parse_profile("slurm")
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert "slurm_partition='all'" in profile["default-resources"]
    assert "slurm_account='lab1'" in profile["default-resources"]
    needed = gpu_rules(PAPER)
    assert {"embed", "extract_features", "match_shard"} <= needed
    routed = {item.split(":")[0] for item in profile["set-resources"] if item.endswith(":slurm_partition='gpu-a100'")}
    assert needed <= routed, f"GPU rules without the GPU partition in profiles/slurm: {sorted(needed - routed)}"


def test_partitions_default_to_the_cluster_default(monkeypatch):
    for var in ["SLURM_CPU_PARTITION", "SLURM_GPU_PARTITION", "SLURM_ACCOUNT"]:
        monkeypatch.delenv(var, raising=False)
    profile = parse_profile("slurm")
    # an empty partition or account makes the plugin fall back to the cluster's default / its own guess
    assert "slurm_partition=''" in profile["default-resources"]
    assert "slurm_account=''" in profile["default-resources"]


def test_local_profile_strips_every_gpu_request():
    profile = parse_profile("slurm-local")
    stripped = {item.split(":")[0] for item in profile["set-resources"] if item.endswith(":gpu=0")}
    missing = gpu_rules(PAPER) - stripped
    assert not missing, f"profiles/slurm-local must set gpu: 0 for {sorted(missing)}"
    assert profile["slurm-status-command"] == "squeue"
    assert "slurm_account" not in " ".join(profile["default-resources"])  # no accounting on the test cluster


def test_paper_metadata_has_the_paper_size(tmp_path):
    import pandas as pd

    meta = pd.read_csv(write_paper_metadata(tmp_path), dtype=str, keep_default_na=False)
    counts = meta.groupby(["dataset", "split"]).size()
    for ds in PAPER_SIZES:
        assert counts[(ds.name, "database")] == ds.database and counts[(ds.name, "query")] == ds.query
        gallery = meta[(meta["dataset"] == ds.name) & (meta["split"] == "database")]
        assert gallery["identity"].nunique() == ds.identities
    assert (meta["split"] == "database").sum() == 13074 and (meta["split"] == "query").sum() == 2135
    assert (meta.loc[meta["split"] == "query", "identity"] == "").all()


def test_paper_dry_run_with_the_slurm_profile(tmp_path, monkeypatch):
    """The paper config on a metadata file of the paper's size plans every GPU matcher shard, quickly."""
    for var in ["SLURM_CPU_PARTITION", "SLURM_GPU_PARTITION", "SLURM_ACCOUNT"]:
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "paper"
    write_paper_metadata(data)
    work = make_workdir(tmp_path / "w")
    args = ["-n", "--profile", "profiles/slurm", "--configfile", str(PAPER), "--config", f"data_root={data}"]
    start = time.perf_counter()
    out = snakemake(work, *args).stdout
    elapsed = time.perf_counter() - start
    print(f"paper-size dry-run with profiles/slurm: {elapsed:.1f} s")
    paper = yaml.safe_load(PAPER.read_text())
    matchers, shards = paper["wildfusion"]["matchers"], paper["wildfusion"]["shards"]
    expected = {(ds.name, m, str(s)) for ds in PAPER_SIZES for m in matchers for s in range(shards)}
    planned = re.findall(r"^Job \d+: Matching shard (\d+) of (\S+) with (\S+) \(gpu=(\d+),", out, flags=re.M)
    assert len(planned) == len(expected) == 3 * 5 * 16
    assert {(ds, m, s) for s, ds, m, _ in planned} == expected
    assert {gpu for *_, gpu in planned} == {"1"}
    assert re.search(r"^match_shard\s+240$", out, flags=re.M)
    assert not (work / "results").exists(), "a dry-run must not write results"
    assert elapsed < 20, f"the dry-run took {elapsed:.1f} s (measured ~3 s on 2 cores)"


# Entry points that run a model (torch, faiss or XGBoost) and take the job's --device.
MODEL_COMMANDS = re.compile(
    r"^python -m workflow\.(embed|match extract|match shard|dual_backbone train|dual_backbone predict|xgb train|"
    r"xgb gate|plots matches|shortlist|review\.page)\b"
)


def device_plan(out: str) -> list[tuple[str, int | None, str | None]]:
    """``(command, gpu, device)`` of every model job of a ``-n --printshellcmds`` output (gpu from its message)."""
    jobs = re.findall(r"^Job \d+: (.*)\n(?:Reason: .*\n)?Shell command: (.*)$", out, flags=re.M)
    plan = []
    for message, command in jobs:
        if MODEL_COMMANDS.match(command):
            gpu = re.search(r"\(gpu=(\d+)", message)
            device = re.search(r"--device (\S+)", command)
            plan.append((command[:60], int(gpu.group(1)) if gpu else None, device.group(1) if device else None))
    return plan


@pytest.mark.parametrize("profile", [None, "slurm-local"])
def test_every_job_on_cuda_requests_a_gpu(tmp_path, monkeypatch, profile):
    """Paper config (device: cuda) at the paper's size: a job runs its models on CUDA exactly when it requests a
    GPU (its gpu resource), also where a profile strips the GPU requests (then every job runs on the CPU)."""
    for var in ["SLURM_CPU_PARTITION", "SLURM_GPU_PARTITION", "SLURM_ACCOUNT"]:
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "paper"
    write_paper_metadata(data)
    work = make_workdir(tmp_path / "w")
    extra = ["--profile", f"profiles/{profile}"] if profile else []
    out = snakemake(work, "-n", "--printshellcmds", *extra, "--configfile", str(PAPER), "--config",
                    f"data_root={data}").stdout  # fmt: skip
    plan = device_plan(out)
    commands = {c.split(" --")[0] for c, *_ in plan}
    assert {"python -m workflow.embed", "python -m workflow.plots matches", "python -m workflow.shortlist"} <= commands
    assert len(plan) > 240, "every match shard, embedding, training and plot job is checked"
    missing = [c for c, gpu, device in plan if gpu is None or device is None]
    assert not missing, f"model jobs without a gpu resource in their message or without --device: {missing[:5]}"
    wrong = [(c, gpu, device) for c, gpu, device in plan if (device == "cuda") != (gpu > 0)]
    assert not wrong, f"device and GPU request disagree: {wrong[:5]}"
    on_gpu = {c.split(" --")[0] for c, gpu, _ in plan if gpu > 0}
    if profile == "slurm-local":
        assert not on_gpu
    else:  # the rules that request a GPU in the paper config run on CUDA; the plots and the shortlist do not
        expected = {"embed", "match extract", "dual_backbone train", "xgb train"}
        assert {f"python -m workflow.{name}" for name in expected} <= on_gpu
        assert "python -m workflow.plots matches" not in on_gpu


@pytest.mark.parametrize(("device", "expected"), [("auto", "auto"), ("cuda", "cuda"), ("cpu", "cpu")])
def test_config_device_only_chooses_among_what_the_job_was_given(tmp_path, device, expected):
    """A job without a GPU runs on the CPU whatever ``device`` says; ``device: cpu`` forces the CPU on GPU jobs."""
    work = make_workdir(tmp_path / "w")
    (work / "gpu.yaml").write_text(f"device: {device}\ncompute:\n  embed: {{gpu: 1}}\n")
    out = snakemake(work, "-n", "--printshellcmds", "--configfile", "gpu.yaml").stdout
    plan = device_plan(out)
    embed = {device for command, _, device in plan if command.startswith("python -m workflow.embed")}
    others = {device for command, _, device in plan if not command.startswith("python -m workflow.embed")}
    assert embed == {expected} and others == {"cpu"}
