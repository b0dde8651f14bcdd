"""Dual-backbone ArcFace training throughput through the workflow's own ``train`` (paper step 5).

Times two epochs of :func:`workflow.dual_backbone.train` (the ``main`` phase: every layer trainable) on
synthetic JPEG photos (throughput from the second, steady-state epoch), for several settings side by side in
one run, and projects the paper-scale cost: 14 epochs (2 + 10 + 2) over 90% of the 13,074 gallery images of
the three AnimalCLEF 2025 datasets.

Settings compared (each against the first, ``fp32, 0 workers``, the configuration's default):
``num_workers`` (DataLoader processes decoding and augmenting), ``precision`` (fp32 or bf16 autocast) and the
lynx's GrabCut background removal (CPU work per image and epoch).

``--paper`` builds the paper's branches with RANDOM weights (Swin-L-384 as ``timm:swin_large_patch4_window12_384``,
the architecture of MegaDescriptor-L-384, and MIEW-msv3's local definition): same shapes and cost as the real
weights. Without it, the demo's CPU branches. Throughput only: the scores of random weights mean nothing.

    python benchmarks/bench_dual_backbone.py                     # demo branches, CPU
    python benchmarks/bench_dual_backbone.py --paper --device cuda --workers 0 8 --out results/bench_db.tsv
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow.dual_backbone import (  # noqa: E402
    ArcFaceHead,
    DualBackbone,
    ImageDataset,
    build_train_transform,
    train,
)

PAPER_BACKBONES = [
    {"source": "timm:swin_large_patch4_window12_384", "pretrained": False, "input_size": 384},
    {"source": "miewid-msv3", "pretrained": False},
]
DEMO_BACKBONES = [
    {"source": "efficientnet-lite0", "input_size": 128},
    {"source": "timm:resnet10t", "pretrained": False, "input_size": 128},
]
PAPER_TRAIN_IMAGES = round(0.9 * 13074)  # 90% of the three galleries
PAPER_EPOCHS = 14


def synthetic_photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` 640 x 480 JPEGs with smooth noise and blobs (decoding cost like real photos)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((640, 480), Image.BILINEAR)
        arr = np.asarray(img).copy()
        for _ in range(12):
            y, x, r = rng.integers(40, 440), rng.integers(40, 600), rng.integers(8, 40)
            arr[max(0, y - r) : y + r, max(0, x - r) : x + r] = rng.integers(0, 255, 3)
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    return paths


def run_setting(backbones, paths, labels, device, batch_size, workers, precision, background, work: Path) -> dict:
    torch.manual_seed(0)
    model = DualBackbone.from_config(backbones)
    head = ArcFaceHead(model.embed_dim, int(labels.max()) + 1, s=64, m=0.5)
    augment = {"background": background, "crop_scale": [0.9, 1.0]}
    data = ImageDataset(paths, labels, None, build_train_transform(augment, model.input_size))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ckpt = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    history = train(model, head, data, None, labels, checkpoint_dir=ckpt,
                    epochs_cfg={"warmup": 0, "main": 2, "final": 0},
                    training_cfg={"batch_size": batch_size, "num_workers": workers, "precision": precision},
                    device=device)  # fmt: skip
    first, seconds = float(history["seconds"].iloc[0]), float(history["seconds"].iloc[-1])
    wall = time.perf_counter() - start
    row = {
        "precision": precision,
        "workers": workers,
        "background": background,
        "images": len(paths),
        "first_epoch_s": round(first, 2),  # includes one-off work (GrabCut masks, cuDNN autotuning)
        "epoch_s": round(seconds, 2),  # the second epoch: steady state
        "wall_s": round(wall, 2),
        "images_per_s": round(len(paths) / seconds, 2),
        "loss": round(float(history["loss"].iloc[-1]), 3),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    row["paper_hours"] = round(PAPER_TRAIN_IMAGES * PAPER_EPOCHS / row["images_per_s"] / 3600, 2)
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper", action="store_true", help="the paper's branches (random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--grabcut", action="store_true", help="also time the lynx GrabCut background removal")
    parser.add_argument("--out", help="TSV of the rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    backbones = PAPER_BACKBONES if args.paper else DEMO_BACKBONES
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "img").mkdir()
        paths = synthetic_photos(work / "img", args.images)
        labels = np.arange(args.images) % args.classes
        print(f"{'paper' if args.paper else 'demo'} branches {[b['source'] for b in backbones]} on {args.device}, "
              f"{args.images} images, batch {args.batch_size}", flush=True)  # fmt: skip
        # a first short epoch warms up kernels, cuDNN autotuning and the page cache (not reported)
        run_setting(backbones, paths[: 2 * args.batch_size], labels[: 2 * args.batch_size], args.device,
                    args.batch_size, 0, "fp32", "none", work)  # fmt: skip
        settings = [(p, w, "none") for p in args.precisions for w in args.workers]
        if args.grabcut:
            settings += [(args.precisions[0], w, "grabcut") for w in args.workers]
        rows = [run_setting(backbones, paths, labels, args.device, args.batch_size, w, p, bg, work)
                for p, w, bg in settings]  # fmt: skip
    table = pd.DataFrame(rows)
    table["speedup"] = (table["images_per_s"] / table["images_per_s"].iloc[0]).round(2)
    print(table.to_string(index=False))
    print(f"paper scale: {PAPER_TRAIN_IMAGES} training images x {PAPER_EPOCHS} epochs, hours per setting above")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, sep="\t", index=False)


if __name__ == "__main__":
    main()
