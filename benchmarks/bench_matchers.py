"""Local matcher throughput: cached features + batched matching vs a straightforward per-pair loop.

Usage::

    python benchmarks/bench_matchers.py [--pairs 48] [--images 16] [--image-size 256]
        [--matchers superpoint-lightglue ... rootsift orb] [--device cpu|cuda] [--threads 1]
    python benchmarks/bench_matchers.py --device cuda --image-size 512 --pairs 240 --images 40 \
        --batch-size 32 --extract-batch-size 16       # the GPU run

For each matcher, on the same shortlist-shaped list of pairs (a few queries, each against many candidates)
over the same synthetic textured images (``--images`` pictures of ``--images / 2`` individuals, two views
each), it times side by side

    naive    for each pair: extract both images' features, match that one pair;
    cached   extract every image once (batched), then ``score_pairs`` over the pairs in batches,

and reports pairs/s of each, the speed-up, and the peak memory of each. Each (matcher, mode) runs in a fresh
subprocess after one untimed warm-up pair, so peaks do not leak from one run into the next. Memory is the
process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the Python
interpreter, torch and the model) and its increase over the RSS just before the timed loop; on CUDA also
``torch.cuda.max_memory_allocated``. Learned matchers use random weights (``allow_random_weights``); their
speed does not depend on the weights because the batched LightGlue forward never prunes points or stops early
(the naive loop calls the same forward on one pair at a time). ``scores equal`` checks that both modes give
the same scores.

The speed-up of caching grows with the number of pairs each image takes part in: 6 per image here (3 pairs
per image, two images per pair), about 84 in the paper's run (640,500 pairs over 15,209 images). LoFTR's fine
stage runs only on coarse matches, which random weights hardly give, so its timing is a lower bound.

Finally it projects the paper-scale run (2,135 queries x 300 candidates x 5 matchers, plus feature extraction
of 15,209 images per matcher at the paper's resolution, timed on ``--projection-images`` images) on this
machine from the measured rates, against the paper's 27 A100-hours for query x gallery matching.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: workflow/ and tests/fixtures.py

PAPER_MATCHERS = ["superpoint-lightglue", "aliked-lightglue", "disk-lightglue", "sift-lightglue", "loftr"]
DEFAULT_MATCHERS = [*PAPER_MATCHERS, "rootsift", "orb"]
PAPER_QUERIES, PAPER_CANDIDATES, PAPER_IMAGES, PAPER_A100_HOURS = 2135, 300, 15209, 27.0
PAPER_SIZE = {"loftr": 192}  # every other paper matcher runs at 512 x 512


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=48, help="pairs to score (default 48)")
    p.add_argument("--images", type=int, default=16, help="synthetic images (default 16)")
    p.add_argument(
        "--image-size", type=int, default=256, help="image side and keypoint matchers' resize (paper: 512; LoFTR 192)"
    )
    p.add_argument("--matchers", nargs="+", default=DEFAULT_MATCHERS, help="registry names")
    p.add_argument("--max-keypoints", type=int, default=256, help="keypoints per image for LightGlue pipelines")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per batch (default: the matcher's)")
    p.add_argument("--extract-batch-size", type=int, default=None, help="images per extraction batch")
    p.add_argument("--device", default="cpu", help="torch device for learned matchers: cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenCV threads per process (default 1: on a shared machine two OpenMP threads can stall on "
        "every small op; the projection runs one shard per core); 0: library default",
    )
    p.add_argument("--mixed-precision", action="store_true", help="autocast the matching networks")
    p.add_argument(
        "--projection-images", type=int, default=2, help="images timed at paper resolution for the projection"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write all measurements to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one (matcher, mode) run
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------
# One (matcher, mode) run, in its own process
# ----------------------------------------------------------------------------------------------------


def make_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """``n`` images [size x size x 3]: ``ceil(n / 2)`` textured individuals, each with a warped second view."""
    from tests.fixtures import textured_image, warp_image

    out = []
    for k in range(math.ceil(n / 2)):
        base = textured_image(size, seed=seed * 1000 + k)
        out += [base, warp_image(base, seed=seed * 1000 + k, strength=0.06)]
    return out[:n]


def make_pairs(n_images: int, n_pairs: int, seed: int) -> list[tuple[int, int]]:
    """Shortlist-shaped pairs: ``n_images // 4`` queries, each against distinct candidates, grouped by query."""
    n_queries = max(1, n_images // 4)
    per_query = math.ceil(n_pairs / n_queries)
    if per_query > n_images - 1:
        raise SystemExit(f"--pairs {n_pairs} needs more than {n_images} images ({per_query} candidates per query)")
    rng = np.random.default_rng(seed)
    pairs = []
    for q in range(n_queries):
        others = np.array([i for i in range(n_images) if i != q])
        pairs += [(q, int(c)) for c in rng.choice(others, per_query, replace=False)]
    return pairs[:n_pairs]


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def matcher_conf(name: str, args: argparse.Namespace, size: int) -> dict:
    from workflow.matchers import MATCHERS

    cls = MATCHERS[name]
    conf = {"resize": PAPER_SIZE.get(name, size)}
    if cls.learned:
        conf.update(allow_random_weights=True, device=args.device, mixed_precision=args.mixed_precision)
        if "max_keypoints" in cls.default_conf:
            conf["max_keypoints"] = args.max_keypoints
    if args.batch_size:
        conf["batch_size"] = args.batch_size
    if args.extract_batch_size:
        conf["extract_batch_size"] = args.extract_batch_size
    return conf


def run_worker(args: argparse.Namespace) -> dict:
    name, mode = args.worker.split(":")
    import logging

    import cv2

    logging.disable(logging.WARNING)  # the random-weights warning, once per network
    if args.threads:
        cv2.setNumThreads(args.threads)
    from workflow.matchers import MATCHERS, create_matcher, score_pairs

    torch = None
    if MATCHERS[name].learned:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    matcher = create_matcher(name, **matcher_conf(name, args, args.image_size))
    images = make_images(args.images, args.image_size, args.seed)
    pairs = make_pairs(args.images, args.pairs, args.seed)
    cuda = torch is not None and matcher.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    # untimed warm-up: one extraction and one match (library initialisation, kernel selection)
    warm = matcher.extract(images[:2])
    matcher.match_pairs(warm[:1], warm[1:])
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = rss_mib()
    result: dict = {"matcher": name, "mode": mode, "pairs": len(pairs), "images": len(images)}
    if mode == "naive":
        t_extract = t_match = 0.0
        scores = []
        for a, b in pairs:
            t0 = time.perf_counter()
            fa, fb = matcher.extract([images[a], images[b]])
            sync()
            t1 = time.perf_counter()
            scores.append(float(matcher.match_pairs([fa], [fb])[0]))
            sync()
            t_extract += t1 - t0
            t_match += time.perf_counter() - t1
        seconds = t_extract + t_match
        result.update(extract_s_per_image=t_extract / (2 * len(pairs)), match_s_per_pair=t_match / len(pairs))
    else:
        t0 = time.perf_counter()
        feats = dict(zip(range(len(images)), matcher.extract(images)))
        sync()
        t1 = time.perf_counter()
        scores = score_pairs(matcher, feats, pairs).tolist()
        sync()
        t2 = time.perf_counter()
        seconds = t2 - t0
        result.update(extract_s_per_image=(t1 - t0) / len(images), match_s_per_pair=(t2 - t1) / len(pairs))
    result.update(
        seconds=seconds,
        pairs_per_s=len(pairs) / seconds,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rss_before_mib=rss_before,
        scores=scores,
        threads=torch.get_num_threads() if torch is not None else cv2.getNumThreads(),
    )
    if cuda:
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if mode == "cached" and args.projection_images > 0 and name in PAPER_MATCHERS:
        paper = PAPER_SIZE.get(name, 512)
        if paper == matcher.conf["resize"]:
            result["paper_extract_s_per_image"] = result["extract_s_per_image"]
        else:
            big = create_matcher(name, **matcher_conf(name, args, paper))
            imgs = make_images(args.projection_images + 1, paper, args.seed + 1)
            big.extract(imgs[:1])  # warm-up
            sync()
            t0 = time.perf_counter()
            big.extract(imgs[1:])
            sync()
            result["paper_extract_s_per_image"] = (time.perf_counter() - t0) / args.projection_images
    return result


# ----------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------


def run_in_subprocess(name: str, mode: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--worker", f"{name}:{mode}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"matcher": name, "mode": mode, "error": tail or f"exit code {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(x: float, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    from workflow.matchers import available_matchers

    unknown = [m for m in args.matchers if m not in available_matchers()]
    if unknown:
        raise SystemExit(f"unknown matcher(s) {unknown}; known: {available_matchers()}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device={args.device}, "
        f"threads={args.threads or 'default'}, {args.images} images of {args.image_size} px, {args.pairs} pairs, "
        f"max_keypoints={args.max_keypoints} (LightGlue), random weights, LightGlue without pruning/early stop",
        flush=True,
    )
    rows = []
    for name in args.matchers:
        naive = run_in_subprocess(name, "naive", argv)
        cached = run_in_subprocess(name, "cached", argv)
        rows.append((name, naive, cached))
        for r in (naive, cached):
            if "error" in r:
                print(f"{name} {r['mode']}: FAILED: {r['error']}", flush=True)
        if "error" not in naive and "error" not in cached:
            print(
                f"{name}: naive {naive['pairs_per_s']:.2f} pairs/s, cached {cached['pairs_per_s']:.2f} pairs/s",
                flush=True,
            )

    head = (
        f"{'matcher':22s} {'naive p/s':>9s} {'cached p/s':>10s} {'speed-up':>8s} {'extract s/img':>13s} "
        f"{'match ms/pair':>13s} {'naive ms/pair':>13s} {'peak RSS naive / cached MiB':>28s} "
        f"{'+RSS naive / cached':>20s} {'equal':>5s}"
    )
    if args.device != "cpu":
        head += f" {'CUDA peak naive / cached MiB':>29s}"
    print("\n" + head + "\n" + "-" * len(head))
    for name, naive, cached in rows:
        if "error" in naive or "error" in cached:
            print(f"{name:22s} failed")
            continue
        equal = np.allclose(naive["scores"], cached["scores"])
        line = (
            f"{name:22s} {naive['pairs_per_s']:9.2f} {cached['pairs_per_s']:10.2f} "
            f"{cached['pairs_per_s'] / naive['pairs_per_s']:7.1f}x {cached['extract_s_per_image']:13.4f} "
            f"{1000 * cached['match_s_per_pair']:13.1f} {1000 * naive['match_s_per_pair']:13.1f} "
            f"{naive['peak_rss_mib']:13.0f} / {cached['peak_rss_mib']:<12.0f} "
            f"{naive['peak_rss_mib'] - naive['rss_before_mib']:9.0f} / "
            f"{cached['peak_rss_mib'] - cached['rss_before_mib']:<8.0f} {'yes' if equal else 'NO':>5s}"
        )
        if args.device != "cpu":
            line += f" {fmt(naive.get('cuda_peak_mib'), 0):>14s} / {fmt(cached.get('cuda_peak_mib'), 0):<12s}"
        print(line)
    print(
        "columns: extract s/img and match ms/pair are the cached run's (batched); naive ms/pair is LightGlue/LoFTR "
        "on one pair; peak RSS = getrusage ru_maxrss of the run's process (interpreter + libraries + model); "
        "+RSS = peak minus RSS before the timed loop"
    )
    project(rows, args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "runs": [r for _, n, c in rows for r in (n, c)]}, fh, indent=1)


def project(rows: list[tuple[str, dict, dict]], args: argparse.Namespace) -> None:
    pairs = PAPER_QUERIES * PAPER_CANDIDATES
    done = {name: (n, c) for name, n, c in rows if "error" not in n and "error" not in c}
    have = [m for m in PAPER_MATCHERS if m in done and "paper_extract_s_per_image" in done[m][1]]
    if not have:
        return
    print(
        f"\nProjected paper-scale run on this machine ({PAPER_QUERIES} queries x {PAPER_CANDIDATES} candidates = "
        f"{pairs:,} pairs per matcher; features of {PAPER_IMAGES:,} images per matcher at 512 px, LoFTR 192 px):"
    )
    print(
        f"{'matcher':22s} {'extract h':>9s} {'match h':>9s} {'cached total h':>14s} {'naive total h':>13s} "
        f"{'speed-up':>8s}"
    )
    total_cached = total_naive = 0.0
    for name in have:
        naive, cached = done[name]
        ext = cached["paper_extract_s_per_image"]
        extract_h = PAPER_IMAGES * ext / 3600
        match_h = pairs * cached["match_s_per_pair"] / 3600
        naive_h = pairs * (2 * ext + naive["match_s_per_pair"]) / 3600
        total_cached += extract_h + match_h
        total_naive += naive_h
        print(
            f"{name:22s} {extract_h:9.2f} {match_h:9.2f} {extract_h + match_h:14.2f} {naive_h:13.2f} "
            f"{naive_h / (extract_h + match_h):7.1f}x"
        )
    missing = [m for m in PAPER_MATCHERS if m not in have]
    label = "all 5 matchers" if not missing else f"{len(have)} of 5 matchers (missing {missing})"
    ratio_cached, ratio_naive = total_cached / PAPER_A100_HOURS, total_naive / PAPER_A100_HOURS
    print(
        f"total ({label}): cached {total_cached:,.2f} h, naive {total_naive:,.1f} h of one process on {args.device} "
        f"with {args.threads or 'default'} thread(s); paper: {PAPER_A100_HOURS:.0f} A100-hours -> cached is "
        f"{ratio_cached:.3g}x, naive {ratio_naive:.3g}x the paper's time"
    )
    if args.device == "cpu" and args.threads:
        shards = max(1, (os.cpu_count() or 1) // args.threads)
        print(
            f"with {shards} such shard process(es) in parallel on this machine's {os.cpu_count()} CPUs: cached "
            f"{total_cached / shards:,.1f} h wall-clock ({total_cached * args.threads:,.0f} CPU-core-hours), "
            f"{total_cached / shards / PAPER_A100_HOURS:.3g}x the paper's 27 h"
        )


if __name__ == "__main__":
    main()
