"""Report figure of the discovery stage: sizes of the discovered new individuals against the true ones.

Inputs
    ``results/stages/discovery/<dataset>/clusters.tsv`` (``image_id, cluster, anchored``) and the data's
    ``solution.csv`` (``image_id, identity, new``: read only to draw the truth).
Outputs
    ``results/plots/discovery/<dataset>.png``: how many new individuals have 1, 2, ... photos, discovered
    (clusters of the photos not anchored to a known individual) next to the truth (query individuals absent from
    the gallery), with the dataset's ARI and AMI over all its queries.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workflow.cli import arg, run_stage, stage_parser
from workflow.data import read_table
from workflow.discovery import clustering_scores, read_clusters
from workflow.stage_io import atomic_path

logger = logging.getLogger(__name__)


def size_counts(labels: pd.Series) -> pd.Series:
    """Number of groups of each size (index: size, value: groups)."""
    return labels.value_counts().value_counts().sort_index()


def plot_cluster_sizes(clusters: pd.DataFrame, solution: pd.DataFrame, dataset: str, out: str | Path) -> dict:
    """Draw the figure; returns the counts it drew and the scores in its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = dict(zip(solution["image_id"], solution["identity"]))
    is_new = dict(zip(solution["image_id"], solution["new"].str.lower().isin(["true", "1"])))
    found = size_counts(clusters.loc[clusters["anchored"].str.lower() != "true", "cluster"])
    true_new = size_counts(pd.Series([truth[q] for q in clusters["image_id"] if is_new.get(q, False)], dtype=object))
    scores = clustering_scores([truth[q] for q in clusters["image_id"]], clusters["cluster"].to_numpy())
    sizes = np.arange(1, max([*found.index, *true_new.index, 1]) + 1)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    width = 0.4
    ax.bar(sizes - width / 2, found.reindex(sizes, fill_value=0), width, label="discovered new individuals")
    ax.bar(sizes + width / 2, true_new.reindex(sizes, fill_value=0), width, label="true new individuals")
    ax.set_xlabel("photos per individual")
    ax.set_ylabel("individuals")
    ax.set_title(f"{dataset}: ARI {scores['ARI']:.3f}, AMI {scores['AMI']:.3f} over {len(clusters)} query photos")
    ax.legend(frameon=False)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return {"found": found.to_dict(), "true": true_new.to_dict(), **scores}


def run(args: argparse.Namespace) -> None:
    drawn = plot_cluster_sizes(read_clusters(args.clusters), read_table(args.solution), args.dataset, args.out)
    logger.info("%s: ARI %.3f, AMI %.3f", args.dataset, drawn["ARI"], drawn["AMI"])


def main(argv: list[str] | None = None) -> None:
    run_stage(stage_parser(__doc__, "dataset", arg("--clusters", required=True), "solution out log"), argv, run)


if __name__ == "__main__":
    main()
