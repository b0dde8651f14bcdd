"""End-to-end smoke run of the paper configuration (config/animalclef2025.yaml) on CPU with random weights.

Usage: ``python benchmarks/paper_smoke.py [--workdir results/benchmarks/paper_smoke] [--cores 2] [--keep]``

What it does:

1. Writes RANDOM-initialised weights in the layouts the workflow loads (no network is needed or used):
   MegaDescriptor-L-384 as a timm hub repository (``config.json`` + ``model.safetensors`` of
   ``swin_large_patch4_window12_384``, written by ``timm.models.save_for_hf``) and MIEW-msv3 as its
   ``model.safetensors`` (:class:`workflow.backbones.MiewIdEmbedder` under a ``model.`` prefix plus a training
   head, the layout ``tests/test_backbones.py`` loads), both in a fake Hugging Face cache (``WORKDIR/hf``); and
   the weight files of the five matchers under the names kornia caches them (SuperPoint, ALIKED, DISK, LoFTR and
   the four LightGlue files with the cvg release's key names) in a fake torch hub (``WORKDIR/torch``). The
   workflow finds them through its normal loading path (``HF_HOME``/``HF_HUB_CACHE``/``TORCH_HOME``,
   ``HF_HUB_OFFLINE=1``), so ``allow_random_weights`` stays off and no network is touched.
2. Writes an overlay (``WORKDIR/paper_smoke.yaml``) for a tiny synthetic dataset from the workflow's own demo
   generator, with the paper's dataset names (LynxID2025, SalamanderID2025, SeaTurtleID2022), so their cascade
   steps, thresholds, ArcFace heads and augmentations apply. It keeps the paper's backbones, matcher list and image
   sizes (384 / 440 px backbones, 512 px LightGlue, 192 px LoFTR) and cuts only what scales with data or compute:
   k_query 5 and k_gallery 8 (over half of each tiny gallery, so every calibrator still sees same-individual pairs
   with random embeddings), 1 shard, 5 boosting rounds, one warm-up and one main dual-backbone epoch at batch
   size 4 with 1 DataLoader worker (the paper's 7 go with its 8 threads per job), CPU, 2 threads per job (so on
   2 cores the heavy jobs run one at a time).
3. Runs ``snakemake --cores N --configfile config/animalclef2025.yaml WORKDIR/paper_smoke.yaml`` in WORKDIR
   (which links Snakefile, rules, config, envs, report and profiles from the repository).
4. Prints the wall time with the mean load average (other processes on the machine inflate the times), per-rule
   times (Snakemake's log; ``logs/benchmarks/`` where a rule has a benchmark file), the job count, the peak
   resident memory of the largest job process and of the whole machine, and ``results/scores.tsv``.

Cost on 2 CPU cores: 99 jobs, about 25 min estimated on an otherwise idle machine (29-45 min measured while other
jobs shared it); about 16 GB of memory (the dual-backbone training of Swin-L-384 + EfficientNetV2-M at batch
size 4 peaks near 15 GB) and about 6 GB of disk (a 1 GB model.pt per dataset, 1 GB of fake hub weights that later
runs reuse, and while each model trains a 2 GB resume checkpoint, deleted once the model is written).

What it proves: every stage of the paper configuration (baseline, WildFusion with the five learned matchers,
re-ranking, XGBoost on the concatenated 3688-d embeddings, dual-backbone ArcFace fine-tuning of Swin-L-384 +
EfficientNetV2-M, the paper's cascade, scoring, submission and plots) builds, loads weights in the hubs'
formats and wires together on CPU.

What it does not prove: anything about accuracy. The weights are random and the data synthetic, so the scores
are meaningless. It also cannot show that the real hub files load: the layouts written here are those the
workflow and its tests assume (for MIEW-msv3 in particular, the key names of the real file are not checked).
Timings cover tiny galleries on CPU and do not extrapolate to the paper's data or to a GPU.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
LINKED = ["Snakefile", "rules", "config", "envs", "report", "profiles"]  # as tests/workflow_helpers.py
PAPER_CONFIG = "config/animalclef2025.yaml"
OVERLAY_NAME = "paper_smoke.yaml"
FAKE_REVISION = "5eed000000000000000000000000000000000000"  # the snapshot's commit in the fake hub cache
LIGHTGLUE_FEATURES = ("superpoint", "aliked", "disk", "sift")
OUTPUTS = ("results", "logs", "resources", ".snakemake")  # removed before a fresh run (--keep reuses them)

CPU = {"threads": 2, "gpu": 0, "mem_mb": 16000, "runtime": 120}


def demo_dataset(name: str, species: str, pattern: str, known: int, gallery: int, distribution: str,
                 orientations: list[str], date_range: list[int] | None) -> dict:  # fmt: skip
    """One ``demo.datasets`` entry (workflow/demo/): 2 new individuals and 6 query images."""
    return {"name": name, "species": species, "pattern": pattern, "known_individuals": known, "new_individuals": 2,
            "gallery_images": gallery, "query_images": 6, "distribution": distribution,
            "orientations": orientations, "date_range": date_range}  # fmt: skip


OVERLAY = {
    "data_root": "resources/demo",  # = demo.root: the rule demo_data generates the dataset
    "device": "cpu",
    "demo": {
        "root": "resources/demo",
        "seed": 2025,
        "image_size": 128,
        "datasets": [
            demo_dataset("LynxID2025", "lynx", "spots", 5, 14, "longtail", ["left", "right", "front", "back"], None),
            demo_dataset(
                "SalamanderID2025",
                "salamander",
                "stripes",
                6,
                12,
                "sparse",
                ["top", "bottom", "left", "right"],
                [2017, 2024],
            ),  # fmt: skip
            demo_dataset(
                "SeaTurtleID2022", "sea_turtle", "mosaic", 5, 14, "medium", ["left", "right", "top"], [2010, 2024]
            ),
        ],
    },
    "shortlist": {"k_query": 5, "k_gallery": 8},
    "wildfusion": {"shards": 1},
    "xgboost": {"num_boost_round": 5, "early_stopping_rounds": 3, "device": "cpu"},
    "dual_backbone": {"epochs": {"warmup": 1, "main": 1, "final": 0}, "training": {"batch_size": 4, "num_workers": 1}},
    # every rule the paper config gives resources (all on GPU there), on the CPU here
    "compute": {rule: dict(CPU) for rule in yaml.safe_load((REPO / PAPER_CONFIG).read_text())["compute"]},
}


# ----------------------------------------------------------------------------------------------- fake weights


def hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the Hugging Face cache layout, with ``refs/main`` pointing at it."""
    from huggingface_hub.file_download import repo_folder_name

    repo_dir = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = repo_dir / "snapshots" / FAKE_REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(FAKE_REVISION)
    return snapshot


def write_megadescriptor(cache: Path) -> Path:
    """MegaDescriptor-L-384 in timm's hub format: swin_large_patch4_window12_384 without a head, random weights."""
    import timm
    import torch
    from timm.models import save_for_hf

    from workflow.backbones import resolve_spec

    spec = resolve_spec("megadescriptor-l-384")
    snapshot = hub_snapshot(cache, spec.location)
    if not (snapshot / "model.safetensors").is_file():
        torch.manual_seed(0)
        net = timm.create_model("swin_large_patch4_window12_384", pretrained=False, num_classes=0)
        save_for_hf(net, str(snapshot), safe_serialization=True)
    return snapshot


def write_miewid(cache: Path) -> Path:
    """MIEW-msv3's ``model.safetensors``: the embedder under a ``model.`` prefix plus an ArcFace head (dropped)."""
    import safetensors.torch
    import torch

    from workflow.backbones import MiewIdEmbedder, resolve_spec

    spec = resolve_spec("miewid-msv3")
    snapshot = hub_snapshot(cache, spec.location)
    if not (snapshot / "model.safetensors").is_file():
        torch.manual_seed(0)
        net = MiewIdEmbedder()
        state = {f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}
        state["model.final.weight"] = torch.randn(64, MiewIdEmbedder.num_features)
        safetensors.torch.save_file(state, str(snapshot / "model.safetensors"))
    return snapshot


def lightglue_release_state(features: str) -> dict:
    """Random LightGlue weights for ``features`` with the cvg release's key names (``self_attn.<i>.``)."""
    from workflow.matchers import load_lightglue

    state = {}
    for key, value in load_lightglue(features, None, filter_threshold=0.1).state_dict().items():
        if key == "confidence_thresholds":  # a derived buffer, not in the release files
            continue
        parts = key.split(".")
        if parts[0] == "transformers" and parts[2] in ("self_attn", "cross_attn"):
            key = ".".join([parts[2], parts[1], *parts[3:]])
        state[key] = value
    return state


def write_matcher_weights(folder: Path) -> list[Path]:
    """Random weights of the five learned matchers under the file names :data:`workflow.matchers.WEIGHTS` looks for."""
    import torch
    from kornia.feature import ALIKED, DISK, LoFTR

    from workflow.matchers import WEIGHTS
    from workflow.matchers.learned import _random_init
    from workflow.matchers.superpoint import SuperPoint

    builders = {
        "superpoint": lambda: SuperPoint().state_dict(),
        "aliked": lambda: ALIKED("aliked-n16").state_dict(),
        "disk": lambda: DISK().state_dict(),
        "loftr": lambda: LoFTR(pretrained=None).state_dict(),
        **{f"lightglue-{f}": (lambda f=f: lightglue_release_state(f)) for f in LIGHTGLUE_FEATURES},
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for key, build in builders.items():
        source = WEIGHTS[key]
        path = folder / source.file_names[0]
        if not path.is_file():
            state = _random_init(build)
            torch.save({source.nested_key: state} if source.nested_key else state, path)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------------- the run


def make_workdir(workdir: Path, keep: bool) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = workdir / name
        if (REPO / name).exists() and not link.exists():
            link.symlink_to(REPO / name)
    if not keep:
        for name in OUTPUTS:
            shutil.rmtree(workdir / name, ignore_errors=True)
    (workdir / OVERLAY_NAME).write_text(
        "# Written by benchmarks/paper_smoke.py: tiny demo data with the paper's dataset names, CPU, short schedules.\n"
        + yaml.safe_dump(OVERLAY, sort_keys=False)
    )


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def inherited_keys() -> list[str]:
    """Settings the run takes from config/config.yaml because neither the paper config nor the overlay set them.

    The Snakefile loads config/config.yaml first and merges the command-line config files into it (dicts deep).
    Sections the paper config does not use (backbones, matchers, demo) and other datasets' entries are skipped.
    """
    paper = yaml.safe_load((REPO / PAPER_CONFIG).read_text())
    given = set(_leaves(paper)) | set(_leaves(OVERLAY))
    names = {d["name"] for d in OVERLAY["demo"]["datasets"]} | {"default"}
    out = []
    for key, value in _leaves(yaml.safe_load((REPO / "config/config.yaml").read_text())).items():
        parts = key.split(".")
        if parts[0] not in paper or parts[0] in ("backbones", "matchers", "demo"):
            continue
        if any(key == g or g.startswith(key + ".") for g in given):
            continue
        if len(parts) > 2 and parts[1] in ("head", "augment") and parts[2] not in names:
            continue
        out.append(f"{key}={value}")
    return out


def memory_in_use_mb() -> float:
    """Memory in use on the whole machine (MemTotal - MemAvailable of /proc/meminfo), every user's processes."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


def run_snakemake(workdir: Path, cores: int) -> tuple[int, float, str, float, float]:
    """Run Snakemake: exit status, wall seconds, log, the machine's peak memory in use (MB), mean 1-min load."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HOME=str(workdir / "hf"),
        HF_HUB_CACHE=str(workdir / "hf" / "hub"),
        TORCH_HOME=str(workdir / "torch"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores),
           "--configfile", PAPER_CONFIG, OVERLAY_NAME]  # fmt: skip
    print("$", " ".join(cmd), f"(in {workdir})", flush=True)
    start, peak, loads = time.perf_counter(), 0.0, []
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak = max(peak, memory_in_use_mb())
            loads.append(os.getloadavg()[0])
            time.sleep(1)
    load = sum(loads) / max(len(loads), 1)
    return proc.returncode, time.perf_counter() - start, (workdir / "snakemake.log").read_text(), peak, load


# ------------------------------------------------------------------------------------------------- reporting

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:Job (\d+):|\s+jobid: (\d+)$)")
_END = re.compile(r"^Finished jobid: (\d+) \(Rule: ([^)]+)\)")


def job_times(log: str) -> pd.DataFrame:
    """One row per finished job: rule and seconds between its start and end lines in Snakemake's log."""
    stamp, starts, rows = None, {}, []
    for line in log.splitlines():
        if m := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := _START.match(line):
            starts[m.group(1) or m.group(2)] = stamp
        elif (m := _END.match(line)) and m.group(1) in starts and stamp is not None:
            rows.append({"rule": m.group(2), "seconds": (stamp - starts[m.group(1)]).total_seconds()})
    return pd.DataFrame(rows, columns=["rule", "seconds"])


def benchmark_times(workdir: Path) -> pd.DataFrame:
    """``logs/benchmarks/<rule>/...tsv`` (Snakemake's benchmark directive): seconds and peak RSS per job."""
    rows = []
    for path in sorted((workdir / "logs" / "benchmarks").rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rel = path.relative_to(workdir / "logs" / "benchmarks")
        rows.append({"rule": rel.parts[0], "job": "/".join(rel.parts[1:-1]), "seconds": float(table["s"].iloc[0]),
                     "max_rss_mb": float(table["max_rss"].iloc[0])})  # fmt: skip
    return pd.DataFrame(rows, columns=["rule", "job", "seconds", "max_rss_mb"])


def report(workdir: Path, rc: int, wall: float, log: str, setup: float, cores: int, peak_machine: float,
           load: float) -> None:  # fmt: skip
    print(f"\n== paper smoke run ({'OK' if rc == 0 else f'FAILED, exit {rc}'}) ==")
    print(f"weights written/checked in {setup:.0f} s; snakemake wall time {wall:.0f} s ({wall / 60:.1f} min) "
          f"with --cores {cores} on {os.cpu_count()} CPUs, mean load average {load:.1f} (above {cores}: other "
          "processes competed for the CPUs and the times are inflated)")  # fmt: skip
    total = re.search(r"^total\s+(\d+)$", log, re.M)
    done = re.findall(r"^(\d+) of (\d+) steps", log, re.M)
    print(f"jobs: {total.group(1) if total else '?'} planned, {done[-1][0] if done else 0} done")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"peak RSS of the largest job process: {peak_kb / 1024:.0f} MB; peak memory in use on the machine "
          f"(all processes, other users' too, sampled each second): {peak_machine:.0f} MB")  # fmt: skip
    times = job_times(log)
    if len(times):
        per_rule = times.groupby("rule")["seconds"].agg(["count", "sum", "max"]).sort_values("sum", ascending=False)
        print("\nper rule, from Snakemake's log (seconds, start to finish; jobs overlap on 2 cores):")
        print(per_rule.to_string())
    bench = benchmark_times(workdir)
    if len(bench):
        print("\nlogs/benchmarks (seconds; max_rss sums a job's processes: DataLoader workers recount shared pages):")
        print(bench.sort_values("seconds", ascending=False).to_string(index=False))
    random_used = sorted(str(p.relative_to(workdir)) for p in (workdir / "logs").rglob("*.log")
                         if "RANDOM weights" in p.read_text(errors="replace"))  # fmt: skip
    print(f"\njobs that fell back to built-in random weights instead of the written files: {random_used or 'none'}")
    inherited = inherited_keys()
    if inherited:
        print("keys taken from config/config.yaml (not set by the paper config):", ", ".join(inherited))
    scores = workdir / "results" / "scores.tsv"
    print("\nresults/scores.tsv (RANDOM weights, synthetic data: the numbers are meaningless):")
    print(scores.read_text() if scores.is_file() else "(missing)")
    if rc != 0:
        print(f"snakemake failed; the end of {workdir / 'snakemake.log'}:\n" + "\n".join(log.splitlines()[-60:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "results" / "benchmarks" / "paper_smoke")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="reuse earlier outputs instead of a fresh run")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    make_workdir(workdir, args.keep)
    start = time.perf_counter()
    written = [write_megadescriptor(workdir / "hf" / "hub"), write_miewid(workdir / "hf" / "hub")]
    written += write_matcher_weights(workdir / "torch" / "hub" / "checkpoints")
    gc.collect()
    setup = time.perf_counter() - start
    print("random weights in hub layouts:", *(str(p.relative_to(workdir)) for p in written), sep="\n  ")
    rc, wall, log, peak_machine, load = run_snakemake(workdir, args.cores)
    report(workdir, rc, wall, log, setup, args.cores, peak_machine, load)
    return rc


if __name__ == "__main__":
    sys.exit(main())
