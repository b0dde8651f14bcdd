"""XGBoost training cost versus classes x features x rows, projected to the paper's scale.

Usage: ``python benchmarks/bench_xgb.py [--rounds 3] [--threads 2] [--out benchmarks/xgb_cost.tsv]``

Each size trains ``multi:softprob`` (depth 6, eta 0.15, lambda 2.0, hist, CPU) for a fixed number of rounds
on synthetic data (one Gaussian cluster per class) in a fresh subprocess, and records seconds per round
and the peak resident memory of that process above its level just before the data was built (this includes
the synthetic data's own temporaries, so it overstates the training's need). Fitted cost models:

    seconds/round = k * C^alpha * F^beta * R^gamma    (least squares in log space)
    extra peak MB = c * R * F + d * R * C + e          (non-negative least squares)

evaluated at the paper's 1,102 classes x 3,718 features x 13,074 rows (296 best rounds). ``--from TSV``
refits a saved result table without training again.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

# classes, features, rows
SIZES = [
    (20, 500, 1000),
    (80, 500, 1000),
    (20, 2000, 1000),
    (20, 500, 4000),
    (100, 1000, 2000),
    (200, 3718, 2000),
]
PAPER = {"classes": 1102, "features": 3718, "rows": 13074, "rounds": 296}


def one(classes: int, features: int, rows: int, rounds: int, threads: int) -> dict:
    import xgboost as xgb

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(0)
    y = np.arange(rows) % classes
    centres = rng.normal(size=(classes, features)).astype(np.float32)
    x = centres[y] * 0.5 + rng.normal(size=(rows, features)).astype(np.float32)
    params = {"max_depth": 6, "eta": 0.15, "lambda": 2.0, "objective": "multi:softprob", "num_class": classes,
              "tree_method": "hist", "device": "cpu", "nthread": threads}  # fmt: skip
    dtrain = xgb.DMatrix(x, label=y.astype(np.float32), nthread=threads)
    start = time.perf_counter()
    xgb.train(params, dtrain, num_boost_round=rounds)
    seconds = time.perf_counter() - start
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"classes": classes, "features": features, "rows": rows, "rounds": rounds,
            "s_per_round": seconds / rounds, "peak_mb": rss1 / 1024, "extra_mb": (rss1 - rss0) / 1024}  # fmt: skip


def fit_and_project(results: list[dict]) -> dict:
    c = np.array([r["classes"] for r in results], float)
    f = np.array([r["features"] for r in results], float)
    n = np.array([r["rows"] for r in results], float)
    t = np.array([r["s_per_round"] for r in results])
    m = np.array([r["extra_mb"] for r in results])
    from scipy.optimize import nnls

    logs = np.stack([np.ones_like(c), np.log(c), np.log(f), np.log(n)], 1)
    (lk, alpha, beta, gamma), *_ = np.linalg.lstsq(logs, np.log(t), rcond=None)
    (mc, md, me), _ = nnls(np.stack([n * f, n * c, np.ones_like(n)], 1), m)
    pc, pf, pn = PAPER["classes"], PAPER["features"], PAPER["rows"]
    per_round = float(np.exp(lk) * pc**alpha * pf**beta * pn**gamma)
    return {
        "model": {"k": float(np.exp(lk)), "alpha": alpha, "beta": beta, "gamma": gamma, "c_mb": mc, "d_mb": md},
        "paper_s_per_round": per_round,
        "paper_hours_296_rounds": per_round * PAPER["rounds"] / 3600,
        "paper_extra_mb": mc * pn * pf + md * pn * pc + me,
        # float32 input + uint8 quantised matrix + float32 gradient, hessian and prediction per row and class
        "paper_floor_mb": (pn * pf * 5 + pn * pc * 12) / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="")
    parser.add_argument("--from", dest="from_tsv", default="", help="refit a table written by --out")
    parser.add_argument("--one", nargs=3, type=int, metavar=("CLASSES", "FEATURES", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one, args.rounds, args.threads)))
        return
    results = []
    start = time.perf_counter()
    print("classes\tfeatures\trows\ts_per_round\tpeak_mb\textra_mb", flush=True)
    if args.from_tsv:
        import pandas as pd

        results = pd.read_csv(args.from_tsv, sep="\t").to_dict("records")
    for size in [] if args.from_tsv else SIZES:
        cmd = [sys.executable, __file__, "--one", *map(str, size), "--rounds", str(args.rounds),
               "--threads", str(args.threads)]  # fmt: skip
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        results.append(r)
        print(f"{r['classes']}\t{r['features']}\t{r['rows']}\t{r['s_per_round']:.3f}\t{r['peak_mb']:.0f}"
              f"\t{r['extra_mb']:.0f}", flush=True)  # fmt: skip
    proj = fit_and_project(results)
    print(f"# total benchmark time {time.perf_counter() - start:.0f} s ({args.threads} threads)")
    mod = proj["model"]
    print(f"# fitted: s/round = {mod['k']:.3g} * C^{mod['alpha']:.2f} * F^{mod['beta']:.2f} * R^{mod['gamma']:.2f}")
    print(
        f"# paper scale (1102 classes x 3718 features x 13074 rows): {proj['paper_s_per_round']:.0f} s/round, "
        f"{proj['paper_hours_296_rounds']:.1f} h for 296 rounds, ~{proj['paper_extra_mb']:.0f} MB above baseline "
        f"(floor {proj['paper_floor_mb']:.0f} MB)"
    )
    if args.out and not args.from_tsv:
        import pandas as pd

        pd.DataFrame(results).to_csv(args.out, sep="\t", index=False)


if __name__ == "__main__":
    main()
