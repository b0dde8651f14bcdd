"""Frozen-backbone dual-backbone training on a real dataset: cost of the cached views, training time, validation
accuracy before/after, and recall@k of the trained embedding against the frozen ImageNet features.

Usage: python benchmarks/bench_frozen.py results/data/<dataset>.tsv CACHE_DIR [SOLUTION_CSV] [--views 4] ...
(the metadata table is the workflow's ``results/data/<dataset>.tsv``; the solution only for recall@k).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import pandas as pd

from workflow.cli import set_threads
from workflow.dual_backbone import stratified_split
from workflow.dual_backbone.frozen import _branch_normalised, _table_views, project, resolve_frozen, train_head
from workflow.shortlist import topk_inner_product
from workflow.stage_io import read_tsv


def recall_at_k(q_emb, g_emb, g_ids, q_truth, k: int) -> float:
    idx, _ = topk_inner_product(q_emb, g_emb, k)
    return float(np.mean([t in set(g_ids[row]) for row, t in zip(idx, q_truth)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("metadata")
    p.add_argument("cache")
    p.add_argument("solution", nargs="?")
    p.add_argument("--backbones", default='[{"source": "efficientnet-lite0"}]')
    p.add_argument("--frozen", default="{}")
    p.add_argument("--head", default='{"s": 64, "m": 0.5}')
    p.add_argument("--k", type=int, nargs="*", default=[10, 20, 30])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--individuals", type=int, default=0, help="a random subset of this many individuals (0: all)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(args.threads)
    meta = read_tsv(args.metadata)
    gal = meta[meta["split"] == "database"].reset_index(drop=True)
    if args.individuals:
        everyone = np.array(sorted(set(gal["identity"])), dtype=object)
        keep = set(np.random.default_rng(0).choice(everyone, args.individuals, replace=False))
        gal = gal[gal["identity"].isin(keep)].reset_index(drop=True)
    frozen = resolve_frozen(json.loads(args.frozen))
    settings = {"backbones": json.loads(args.backbones), "augment": {}}
    t0 = time.perf_counter()
    views, dims = _table_views(gal, settings, frozen["views"], args.cache, "cpu")
    t_cache = time.perf_counter() - t0
    classes = sorted(set(gal["identity"].astype(str)))
    labels = pd.Categorical(gal["identity"].astype(str), classes).codes.astype(np.int64)
    tr, va = stratified_split(gal["identity"].to_numpy(), 0.1, 0)
    t0 = time.perf_counter()
    model, head, hist = train_head(views[tr], labels[tr], len(classes), dims, frozen, json.loads(args.head),
                                   (views[va, 0], labels[va]), 0)  # fmt: skip
    t_train = time.perf_counter() - t0
    print(hist.to_string())
    if frozen["views"] > 1:  # the same training on view 0 only: what the augmented views add
        _, _, hist1 = train_head(views[tr][:, :1], labels[tr], len(classes), dims, frozen, json.loads(args.head),
                                 (views[va, 0], labels[va]), 0)  # fmt: skip
        print("view 0 only: validation accuracy", hist1["val_accuracy"].iloc[-1])
    out = {"gallery": len(gal), "load": open("/proc/loadavg").read().split()[:3], "individuals": len(classes),
           "views": frozen["views"], "dims": dims,
           "cache_s": round(t_cache, 1), "train_s": round(t_train, 1), "val_images": len(va),
           "val_acc_untrained_ncm": hist["val_accuracy"].iloc[0],
           "val_acc_trained": hist["val_accuracy"].iloc[-1]}  # fmt: skip
    if args.solution:
        sol = pd.read_csv(args.solution, dtype=str, keep_default_na=False)
        known = sol[sol["new"].str.lower().isin(["false", "0"]) & sol["identity"].isin(set(gal["identity"]))]
        qry = meta[meta["image_id"].isin(known["image_id"])].reset_index(drop=True)
        truth = dict(zip(known["image_id"], known["identity"]))
        t0 = time.perf_counter()
        qviews, _ = _table_views(qry, settings, 1, args.cache, "cpu")
        out["query_view_s"] = round(time.perf_counter() - t0, 1)
        g_ids = gal["identity"].to_numpy(dtype=object)
        q_truth = [truth[i] for i in qry["image_id"]]
        # the full-gallery model for recall (what the shortlist would use)
        model_all, _, _ = train_head(views, labels, len(classes), dims, frozen, json.loads(args.head), None, 0)
        for name, g, q in (("imagenet", _branch_normalised(views[:, 0], dims), _branch_normalised(qviews[:, 0], dims)),
                           ("trained", project(model_all, views[:, 0]), project(model_all, qviews[:, 0]))):  # fmt: skip
            for k in args.k:
                out[f"recall@{k}_{name}"] = recall_at_k(q, g, g_ids, q_truth, k)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
