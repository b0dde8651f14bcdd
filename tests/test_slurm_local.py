"""A real SLURM run: the built-in demo through profiles/slurm-local gives the local run's submission.

Needs the single-node cluster of ``.ci/slurm_local.sh start`` (``.ci/run`` starts and stops it); skipped
when ``sinfo`` does not answer. Both runs are the tiny three-species configuration of ``tests/configs/tiny.yaml``
(every stage, one SLURM job per rule, GPU rules included) built up to ``results/submission.csv`` and
``results/scores.tsv``; the SLURM run costs several minutes more than the local one (each job pays 4-6 s of
Snakemake start-up plus status polling).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from workflow_helpers import make_workdir, snakemake

TARGETS = ["results/submission.csv", "results/scores.tsv"]
# A tiny config of its own keeps the test to minutes as the demo grows.
CONFIG = ["--configfile", str(REPO / "tests" / "configs" / "tiny.yaml")]


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


def test_tiny_run_through_slurm_matches_the_local_run(tmp_path):
    local = make_workdir(tmp_path / "local")
    cluster = make_workdir(tmp_path / "slurm")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    cmd = [str(Path(sys.executable).parent / "snakemake"), *TARGETS, *CONFIG, "--profile", "profiles/slurm-local"]
    start = time.perf_counter()
    # the SLURM run mostly waits on status polls: run the local one meanwhile
    proc = subprocess.Popen(cmd, cwd=cluster, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        snakemake(local, *TARGETS, *CONFIG, "--cores", "2", timeout=1800)  # rules get the threads they get in a job
        out, _ = proc.communicate(timeout=2400)
    finally:
        if proc.poll() is None:  # the local run failed or the SLURM run hangs: cancel its jobs (SIGTERM)
            proc.terminate()
            try:
                proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
    elapsed = time.perf_counter() - start
    print(f"demo through SLURM: {elapsed:.0f} s")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    submitted = out.count("has been submitted with SLURM jobid")
    assert submitted >= 50, f"expected one SLURM job per rule, saw {submitted}:\n{out[-3000:]}"
    for rule in ["demo_data", "validate_data", "embed", "extract_features", "match_shard", "wildfusion", "rerank",
                 "xgboost_train", "dual_backbone_train", "cascade"]:  # fmt: skip
        assert (cluster / ".snakemake" / "slurm_logs" / f"rule_{rule}").is_dir() or f"rule_{rule}/" in out, rule
    for target in TARGETS:
        assert (cluster / target).read_bytes() == (local / target).read_bytes(), target
