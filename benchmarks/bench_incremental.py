"""Recompute only what is new: a run after 10% new gallery photos, against a full rerun, in one session.

Usage::

    python benchmarks/bench_incremental.py [--work DIR] [--datasets LynxDemo] [--fraction 0.1] [--cores 2]

In scratch folders under ``--work`` (default: a new temporary folder):

1. generates the demo datasets ``--datasets`` (the demo generator with config/config.yaml's ``demo`` section) and
   runs the workflow with the demo's settings (config/demo.yaml) up to WildFusion (targets
   ``results/stages/wildfusion/<dataset>/predictions.tsv``): run (a), from empty caches;
2. enrolls ``--fraction`` x (gallery size) query photos of known individuals (chosen at random, seed 0) into the
   gallery with their identity (their rows of metadata.csv become ``split=database`` with the solution's identity,
   and leave solution.csv), in place, and reruns in the same working folder: run (b), which reuses the per-image
   embedding and feature caches and the pair-level match cache;
3. copies the grown data into a fresh working folder and runs it from empty caches: run (c).

Prints (and writes to ``<work>/incremental.json``) per run: the wall time, the pairs requested, served from the
pair cache and matched by the match shards that ran (their ``shard<i>.cost.json``), and for (b) the jobs
Snakemake ran per rule; then how many match shards and WildFusion outputs of (b) and (c) are byte-identical (the
cache must not change a result).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
LINKED = ["Snakefile", "rules", "config", "envs", "report", "profiles", "workflow"]


def workdir(path: Path) -> Path:
    """A working folder that sees the repository's workflow files but keeps its own results and caches."""
    path.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    return path


def generate(root: Path, datasets: list[str]) -> None:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["demo"]
    known = [d["name"] for d in cfg["datasets"]]
    if not set(datasets) <= set(known):
        raise SystemExit(f"--datasets {datasets}: not demo datasets; the demo has {known}")
    cfg["datasets"] = [d for d in cfg["datasets"] if d["name"] in datasets]
    cmd = [sys.executable, "-m", "workflow.demo", "--config", json.dumps(cfg), "--out", str(root)]
    subprocess.run(cmd, check=True, cwd=REPO)


def enroll(root: Path, fraction: float, seed: int = 0) -> dict[str, int]:
    """Move ``fraction`` x gallery size known queries per dataset into the gallery; returns the count per dataset."""
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    solution = pd.read_csv(root / "solution.csv", dtype=str, keep_default_na=False)
    truth = dict(zip(solution["image_id"], solution["identity"]))
    known = solution[solution["new"].str.lower() != "true"]["image_id"]
    rng = np.random.default_rng(seed)
    moved: dict[str, int] = {}
    chosen: list[str] = []
    for dataset, rows in meta.groupby("dataset", sort=True):
        gallery = int((rows["split"] == "database").sum())
        queries = rows[(rows["split"] == "query") & rows["image_id"].isin(known)]["image_id"].to_numpy()
        n = min(len(queries), max(1, round(fraction * gallery)))
        picked = sorted(rng.choice(queries, size=n, replace=False).tolist())
        chosen += picked
        moved[str(dataset)] = n
    rows = meta["image_id"].isin(chosen)
    meta.loc[rows, "split"] = "database"
    meta.loc[rows, "identity"] = meta.loc[rows, "image_id"].map(truth)
    meta.to_csv(root / "metadata.csv", index=False)
    solution[~solution["image_id"].isin(chosen)].to_csv(root / "solution.csv", index=False)
    return moved


def run(work: Path, data: Path, datasets: list[str], cores: int) -> dict:
    """One Snakemake run up to WildFusion; wall time, match-shard pair counts and the jobs per rule."""
    targets = [f"results/stages/wildfusion/{d}/predictions.tsv" for d in datasets]
    cmd = [str(Path(sys.executable).parent / "snakemake"), *targets, "--cores", str(cores),
           "--configfile", "config/demo.yaml", "--config", f"data_root={data}"]  # fmt: skip
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    start_ns = time.time_ns()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (work / f"snakemake-{start_ns}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {work}:\n{proc.stderr[-4000:]}")
    text = proc.stdout + proc.stderr
    stats = text.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in text else ""
    jobs = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if r != "total"}
    counts = {"pairs_requested": 0, "pairs_from_cache": 0, "pairs_matched": 0, "shard_seconds": 0.0}
    for cost in (work / "results" / "matches").rglob("shard*.cost.json"):
        if cost.stat().st_mtime_ns >= start_ns:  # a shard of this run
            record = json.loads(cost.read_text())
            for key in counts:
                counts[key] += record.get(key if key != "shard_seconds" else "seconds", 0)
    return {"wall_s": round(wall, 1), **counts, "shard_seconds": round(counts["shard_seconds"], 1), "jobs": jobs}


def compare(one: Path, other: Path, datasets: list[str]) -> dict[str, str]:
    """How many match shards and WildFusion outputs of two working folders are byte-identical."""
    shards = sorted(p.relative_to(one) for p in (one / "results" / "matches").rglob("shard*.parquet"))
    stages = [
        Path(f"results/stages/wildfusion/{d}/{n}") for d in datasets for n in ("predictions.tsv", "pairs.parquet")
    ]
    out = {}
    for name, files in (("match shards", shards), ("wildfusion outputs", stages)):
        same = sum((other / f).is_file() and (one / f).read_bytes() == (other / f).read_bytes() for f in files)
        out[name] = f"{same}/{len(files)}"
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    p.add_argument("--datasets", nargs="+", default=["LynxDemo"])
    p.add_argument("--fraction", type=float, default=0.1, help="new gallery photos, as a fraction of the gallery")
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_incremental."))
    work.mkdir(parents=True, exist_ok=True)
    first = workdir(work / "incremental")
    data = first / "data"
    generate(data, args.datasets)
    results = {"datasets": args.datasets, "fraction": args.fraction, "cores": args.cores}
    results["a_full"] = run(first, data, args.datasets, args.cores)
    print("(a) full run:", json.dumps(results["a_full"]), flush=True)
    results["enrolled"] = enroll(data, args.fraction)
    results["b_incremental"] = run(first, data, args.datasets, args.cores)
    print("(b) after enrolling", results["enrolled"], ":", json.dumps(results["b_incremental"]), flush=True)
    scratch = workdir(work / "scratch")
    shutil.copytree(data, scratch / "data")
    results["c_scratch"] = run(scratch, scratch / "data", args.datasets, args.cores)
    print("(c) full rerun on the grown data:", json.dumps(results["c_scratch"]), flush=True)
    results["identical_to_scratch"] = compare(first, scratch, args.datasets)
    print("(b) vs (c), files byte-identical:", json.dumps(results["identical_to_scratch"]), flush=True)
    b, c = results["b_incremental"], results["c_scratch"]
    results["b_over_c_pairs_matched"] = round(b["pairs_matched"] / max(c["pairs_matched"], 1), 4)
    results["b_over_c_wall"] = round(b["wall_s"] / max(c["wall_s"], 1e-9), 4)
    (work / "incremental.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| run | wall (s) | pairs requested | from cache | matched |")
    print("|---|---:|---:|---:|---:|")
    for name, key in [("(a) full", "a_full"), ("(b) +10% gallery, cache", "b_incremental"),
                      ("(c) full rerun, grown", "c_scratch")]:  # fmt: skip
        r = results[key]
        print(f"| {name} | {r['wall_s']} | {r['pairs_requested']} | {r['pairs_from_cache']} | {r['pairs_matched']} |")
    print(f"pairs matched (b)/(c) = {results['b_over_c_pairs_matched']}, wall (b)/(c) = {results['b_over_c_wall']}")
    print("jobs in (b):", json.dumps(b["jobs"]))
    print("written", work / "incremental.json")


if __name__ == "__main__":
    main()
