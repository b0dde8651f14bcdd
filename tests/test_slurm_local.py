"""A real SLURM run: the tiny demo through profiles/slurm-local gives the local run's submission.

Needs the single-node cluster of ``.ci/slurm_local.sh start`` (``.ci/run`` starts and stops it); skipped
when ``sinfo`` does not answer. To keep CI short (each SLURM job costs 4-6 s of Snakemake start-up plus
status polling), both runs use tests/configs/tiny.yaml cut to one species, one matcher and two shards,
and build only ``results/submission.csv``: still one SLURM job per rule, GPU rules included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

TINY = REPO / "tests" / "configs" / "tiny.yaml"
TARGET = "results/submission.csv"


def sinfo_state() -> str:
    if shutil.which("sinfo") is None:
        return ""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sinfo_state(),
        reason="no SLURM cluster answers `sinfo`; start the local one with `.ci/slurm_local.sh start` (as root)",
    ),
]


def one_species_overlay(path: Path) -> Path:
    """tiny.yaml with its first demo species only, one matcher and two shards."""
    tiny = yaml.safe_load(TINY.read_text())
    first = tiny["demo"]["datasets"][0]
    overlay = {
        "wildfusion": {**tiny["wildfusion"], "matchers": tiny["wildfusion"]["matchers"][:1], "shards": 2},
        "demo": {**tiny["demo"], "datasets": [first]},
    }
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def test_tiny_demo_through_slurm_matches_the_local_run(tmp_path):
    configs = ["--configfile", str(TINY), str(one_species_overlay(tmp_path / "one_species.yaml"))]
    local = make_workdir(tmp_path / "local")
    cluster = make_workdir(tmp_path / "slurm")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [str(Path(sys.executable).parent / "snakemake"), TARGET, "--profile", "profiles/slurm-local", *configs]
    start = time.perf_counter()
    # the SLURM run mostly waits on status polls: run the local one meanwhile
    proc = subprocess.Popen(cmd, cwd=cluster, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        snakemake(local, TARGET, "--cores", "1", *configs)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # the local run failed or the SLURM run hangs: cancel its jobs (SIGTERM)
            proc.terminate()
            proc.communicate(timeout=60)
    elapsed = time.perf_counter() - start
    print(f"tiny demo (one species) through SLURM: {elapsed:.0f} s")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    submitted = out.count("has been submitted with SLURM jobid")
    assert submitted >= 8, f"expected one SLURM job per rule, saw {submitted}:\n{out[-3000:]}"
    for rule in ["demo_data", "validate_data", "embed", "extract_features", "match_shard", "wildfusion"]:
        assert (cluster / ".snakemake" / "slurm_logs" / f"rule_{rule}").is_dir() or f"rule_{rule}/" in out, rule
    assert (cluster / TARGET).read_bytes() == (local / TARGET).read_bytes()
