"""Figures and tables of the HTML report (``snakemake --report``).

Subcommands (each called by one rule of ``rules/report.smk``):

``new-share``    per-stage predictions of one dataset + ``solution.csv`` -> Figure 2 analogue: the dataset
                 score ``sqrt(BAKS * BAUS)`` against the share of ``new_individual`` predictions as each
                 stage's threshold sweeps over its ``top_score`` values, the threshold actually used marked.
``matches``      WildFusion pairs of one dataset -> Figure 3 analogue: a few queries beside their top-ranked
                 candidate with the keypoint matches of every configured matcher (one row per matcher,
                 lines coloured by confidence).
``scores-html``  ``results/scores.tsv`` -> a small HTML table (the report shows ``.tsv`` only as a download).
"""

from __future__ import annotations

import argparse
import html
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.cli import arg, command, run_stage, stage_parser
from workflow.data import read_table
from workflow.device import with_device
from workflow.images import load_rgb
from workflow.metrics import score_predictions
from workflow.stage_io import atomic_path, read_tsv

logger = logging.getLogger(__name__)

CURVE_COLUMNS = ["threshold", "new_share", "score", "BAKS", "BAUS"]
# At most this many thresholds per curve (quantiles of the scores beyond it).
MAX_THRESHOLDS = 256
# Stages drawn later get another line style and a smaller marker, so that coinciding curves stay visible.
LINE_STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "D", "^", "v", "P"]
# At most this many match lines drawn per pair (the most confident ones).
MAX_LINES = 150


def _is_new(values: pd.Series) -> np.ndarray:
    return values.astype(str).str.lower().isin(["true", "1"]).to_numpy()


def _aligned(predictions: pd.DataFrame, solution: pd.DataFrame) -> pd.DataFrame:
    """Solution rows of the predicted images with ``top_identity`` and ``top_score`` beside them."""
    cols = [c for c in ("image_id", "identity", "top_identity", "top_score", "base_identity") if c in predictions]
    pred = predictions[cols].rename(columns={"identity": "predicted"})
    merged = solution[["image_id", "identity", "new"]].merge(pred, on="image_id", how="inner")
    if len(merged) < len(predictions):
        logger.warning("%d predicted image(s) are not in the solution", len(predictions) - len(merged))
    return merged


def sweep_thresholds(scores: np.ndarray) -> np.ndarray:
    """Thresholds from "nothing new" to "everything new": each distinct score and one above the largest."""
    finite = np.unique(scores[np.isfinite(scores)])
    if len(finite) > MAX_THRESHOLDS:
        finite = np.unique(np.quantile(finite, np.linspace(0, 1, MAX_THRESHOLDS)))
    top = finite[-1] + max(1e-6, 1e-6 * abs(finite[-1])) if len(finite) else 0.0
    return np.append(finite, top)


def new_share_curve(predictions: pd.DataFrame, solution: pd.DataFrame) -> pd.DataFrame:
    """Score and share of ``new_individual`` as the threshold sweeps over ``top_score``.

    Args:
        predictions: ``image_id, top_identity, top_score`` of one stage on one dataset (``identity`` ignored).
        solution: ``image_id, identity, new`` (other datasets' rows are ignored).

    Returns:
        One row per threshold ``t`` (ascending): images with ``top_score < t`` (or no score) are predicted
        ``new_individual`` (or, for a gate stage whose predictions have ``base_identity``, that base
        prediction), the others ``top_identity``; columns ``threshold, new_share, score, BAKS, BAUS``.
    """
    merged = _aligned(predictions, solution)
    scores = pd.to_numeric(merged["top_score"], errors="coerce").to_numpy(dtype=float)
    top = merged["top_identity"].fillna("").astype(str).to_numpy(dtype=object)
    no_top = (top == "") | (top == NEW_INDIVIDUAL)
    y_true, is_new = merged["identity"].to_numpy(dtype=object), _is_new(merged["new"])
    # A gate stage (``base_identity``: XGBoost) keeps the base stage's prediction below its threshold.
    below = merged["base_identity"].astype(str).to_numpy(dtype=object) if "base_identity" in merged else None
    rows = []
    for t in sweep_thresholds(scores):
        low = ~(scores >= t) | no_top  # NaN scores compare False: always below
        y_pred = np.where(low, NEW_INDIVIDUAL if below is None else below, top)
        s = score_predictions(y_true, y_pred, is_new)
        rows.append({"threshold": float(t), **{k: s[k] for k in CURVE_COLUMNS if k != "threshold"}})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def used_point(predictions: pd.DataFrame, solution: pd.DataFrame) -> dict[str, float]:
    """Score and share of ``new_individual`` of the stage's own predictions (the threshold it used)."""
    merged = _aligned(predictions, solution)
    return score_predictions(merged["identity"], merged["predicted"], _is_new(merged["new"]))


def plot_new_share(curves: dict[str, tuple[pd.DataFrame, dict]], dataset: str, out: str | Path) -> None:
    """One line per stage (score vs share of ``new_individual``), the used threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (stage, (curve, used)) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        style = dict(ls=LINE_STYLES[i % len(LINE_STYLES)], marker=MARKERS[i % len(MARKERS)])
        order = np.argsort(curve["new_share"].to_numpy(), kind="stable")
        ax.plot(
            curve["new_share"].to_numpy()[order],
            curve["score"].to_numpy()[order],
            color=color,
            lw=1.6,
            ls=style["ls"],
            label=f"{stage} (used: {used['score']:.3f})",
        )
        ax.plot(
            [used["new_share"]],
            [used["score"]],
            marker=style["marker"],
            ms=max(11 - 2 * i, 5),
            color=color,
            mec="black",
            zorder=5 + i,
        )
    ax.set_xlabel("share of new_individual predictions")
    ax.set_ylabel("score = sqrt(BAKS · BAUS)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"{dataset}: score vs share of new individuals (marker: threshold used)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------
# Matches (Figure 3 analogue)
# ------------------------------------------------------------------------------------------------------


def _id_key(image_id: str):
    text = str(image_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def pick_examples(pairs: pd.DataFrame, n: int, known: set[str] | None = None) -> pd.DataFrame:
    """The first ``n`` queries (by image_id) with candidates and their best-``fused`` candidate.

    Args:
        pairs: WildFusion pairs ``query, candidate, kind, fused``; only ``kind == "query"`` rows count.
        known: if given, only these query image ids (known individuals) are eligible.

    Returns:
        ``query, candidate, fused`` rows, at most ``n``.
    """
    q = pairs[pairs["kind"] == "query"].copy()
    q["query"], q["candidate"] = q["query"].astype(str), q["candidate"].astype(str)
    if known is not None:
        q = q[q["query"].isin(known)]
    if q.empty:
        return pd.DataFrame(columns=["query", "candidate", "fused"])
    best = q.loc[q.groupby("query")["fused"].idxmax(), ["query", "candidate", "fused"]]
    best = best.iloc[sorted(range(len(best)), key=lambda i: _id_key(best["query"].iloc[i]))]
    return best.head(n).reset_index(drop=True)


def pair_matches(name: str, conf: dict, image0: np.ndarray, image1: np.ndarray):
    """Resized images and matches of one pair: ``(img0, img1, kpts0, kpts1, confidence)``.

    Raises whatever :func:`workflow.matchers.create_matcher` raises (e.g. ``WeightsNotFoundError``).
    """
    # OpenCV and the matchers: only the match plots need them
    from workflow.matchers import create_matcher

    matcher = create_matcher(name, **conf)
    f0, f1 = matcher.extract([image0, image1])
    k0, k1, c = matcher.match_details(f0, f1)
    return matcher.preprocess(image0, False), matcher.preprocess(image1, False), k0, k1, c


def _draw_pair(ax, img0, img1, k0, k1, conf, cmap, threshold: float | None) -> None:
    from matplotlib.collections import LineCollection

    h = max(img0.shape[0], img1.shape[0])
    canvas = np.zeros((h, img0.shape[1] + img1.shape[1], 3), dtype=np.uint8)
    canvas[: img0.shape[0], : img0.shape[1]] = img0
    canvas[: img1.shape[0], img0.shape[1] :] = img1
    ax.imshow(canvas)
    order = np.argsort(-conf)[:MAX_LINES]
    if len(order):
        segs = np.stack([k0[order], k1[order] + [img0.shape[1], 0]], axis=1)
        lc = LineCollection(segs, cmap=cmap, linewidths=0.9, alpha=0.85)
        lc.set_array(np.clip(conf[order], 0, 1))
        lc.set_clim(0, 1)
        ax.add_collection(lc)
    above = int(np.count_nonzero(conf > threshold)) if threshold is not None else len(conf)
    ax.set_xlabel(f"{len(conf)} matches, {above} above {threshold}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_matches(
    examples: pd.DataFrame, paths: dict[str, str], matchers: dict[str, dict], dataset: str, out: str | Path
) -> None:
    """Grid of ``len(matchers)`` rows x ``len(examples)`` columns; a failing matcher's row shows its error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis")
    n_rows, n_cols = max(len(matchers), 1), max(len(examples), 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 2.6 * n_rows + 0.6), dpi=110, squeeze=False)
    images = {i: load_rgb(paths[i]) for i in {*examples["query"], *examples["candidate"]}}
    for r, (name, conf) in enumerate(matchers.items()):
        threshold = conf.get("confidence_threshold")
        error = None
        for c, ex in enumerate(examples.itertuples(index=False)):
            ax = axes[r][c]
            if error is None:
                try:
                    img0, img1, k0, k1, cf = pair_matches(name, conf, images[ex.query], images[ex.candidate])
                    if threshold is None:
                        # OpenCV and the matchers: only the match plots need them
                        from workflow.matchers import create_matcher

                        threshold = create_matcher(name, **conf).conf["confidence_threshold"]
                    _draw_pair(ax, img0, img1, k0, k1, np.asarray(cf, float), cmap, threshold)
                except Exception as err:  # noqa: BLE001 - a matcher that cannot run is drawn, not fatal
                    # OpenCV and the matchers: only the match plots need them
                    from workflow.matchers import MatcherUnavailableError, WeightsNotFoundError

                    if not isinstance(err, (WeightsNotFoundError, MatcherUnavailableError)):
                        raise
                    error = f"{type(err).__name__}: {err}"
                    logger.warning("%s: %s", name, error)
            if error is not None:
                ax.axis("off")
                ax.text(
                    0.5,
                    0.5,
                    "\n".join(_wrap(error, 60)),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="firebrick",
                    transform=ax.transAxes,
                )
            if c == 0:
                ax.set_ylabel(name, fontsize=11)
                if error is not None:
                    ax.text(-0.05, 0.5, name, ha="right", va="center", fontsize=11, transform=ax.transAxes)
            if r == 0:
                ax.set_title(f"query {ex.query} → {ex.candidate}\nfused {ex.fused:.3f}", fontsize=9)
    if examples.empty:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no query with candidates", ha="center", va="center")
    fig.suptitle(f"{dataset}: local-feature matches of queries and their top WildFusion candidate", fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.92, 0.97))
    cax = fig.add_axes((0.935, 0.15, 0.015, 0.7))
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, 1))
    fig.colorbar(sm, cax=cax, label="match confidence")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)[:8] or [""]


# ------------------------------------------------------------------------------------------------------
# Scores table
# ------------------------------------------------------------------------------------------------------


def scores_html(table: pd.DataFrame) -> str:
    """A standalone HTML page with the ablation table (numbers to 4 decimals, ``ALL`` rows in bold)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for _, row in table.iterrows():
        cells = []
        for c in table.columns:
            value = row[c]
            num = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
            text = "" if pd.isna(num) and str(value) in ("", "nan") else (f"{num:.4f}" if pd.notna(num) else value)
            cells.append(f"<td>{html.escape(str(text))}</td>")
        style = ' style="font-weight:bold"' if str(row.get("dataset", "")) == "ALL" else ""
        rows.append(f"<tr{style}>{''.join(cells)}</tr>")
    css = (
        "body{font-family:sans-serif} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#eee}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{css}</style></head><body>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n"
    )


# ------------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------------


def new_share(args: argparse.Namespace) -> None:
    """``new-share``: score versus share predicted new of every stage on one dataset."""
    if len(args.stages) != len(args.predictions):
        raise SystemExit(f"error: {len(args.stages)} stages but {len(args.predictions)} prediction files")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    solution = read_table(args.solution)
    curves = {}
    for stage, path in zip(args.stages, args.predictions):
        pred = read_tsv(path)
        curves[stage] = (new_share_curve(pred, solution), used_point(pred, solution))
        logger.info(
            "%s/%s: used share %.3f score %.3f",
            args.dataset,
            stage,
            curves[stage][1]["new_share"],
            curves[stage][1]["score"],
        )
    plot_new_share(curves, args.dataset, args.out)


def matches(args: argparse.Namespace) -> None:
    """``matches``: keypoint matches of example pairs, one row per matcher."""

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pairs = pd.read_parquet(args.pairs)
    meta = read_tsv(args.metadata)
    known = None
    if args.solution:
        sol = read_table(args.solution)
        known = set(sol.loc[~_is_new(sol["new"]), "image_id"].astype(str))
    examples = pick_examples(pairs, args.n, known)
    if examples.empty and known is not None:
        examples = pick_examples(pairs, args.n)
    logger.info("%s: examples %s", args.dataset, examples.to_dict("records"))
    matchers = {name: with_device(name, conf, args.device) for name, conf in json.loads(args.matchers).items()}
    paths = dict(zip(meta["image_id"].astype(str), meta["abspath"]))
    plot_matches(examples, paths, matchers, args.dataset, args.out)


def scores_page(args: argparse.Namespace) -> None:
    """``scores-html``: the scores table as an HTML page."""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table = read_tsv(args.scores)
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(scores_html(table))
    logger.info("wrote %s: %d rows", args.out, len(table))


def main(argv: list[str] | None = None) -> None:
    solution = arg("--solution", required=False, default="", nargs="?", const="",
                   help="solution.csv (absent: not scored)")  # fmt: skip
    commands = {
        "new-share": command(None, "dataset", arg("--stages", nargs="+", required=True),
                             arg("--predictions", nargs="+", help="one per stage, in the order of --stages"),
                             "solution out"),
        "matches": command(None, "dataset", arg("--pairs", required=True), "metadata", solution,
                           arg("--matchers", nargs=None, default=None, required=True,
                               help="JSON {name: options}, in row order"),
                           arg("--n", type=int, default=3), arg("--device", default="cpu"), "out"),
        "scores-html": command(None, arg("--scores", required=True), "out"),
    }  # fmt: skip
    handlers = {"new-share": new_share, "matches": matches, "scores-html": scores_page}
    run_stage(stage_parser(__doc__, "log", commands=commands), argv, handlers)


if __name__ == "__main__":
    main()
