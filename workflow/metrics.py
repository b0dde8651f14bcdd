"""AnimalCLEF 2025 scoring: BAKS, BAUS and their geometric mean, exactly as the organisers define them.

- BAKS: over query images whose individual is in the database, the mean over those individuals of the
  share of that individual's images predicted as the right identity.
- BAUS: over query images of new individuals, the mean over those individuals of the share of their
  images predicted ``new_individual``. (The true label of a new animal is its own identity.)
- Dataset score: ``sqrt(BAKS * BAUS)``, where a NaN (no known or no new individuals) counts as 0.
- Final score: the mean of the dataset scores.

Inputs are aligned 1-D sequences of length ``[Q]``: ``y_true`` identities, ``y_pred`` predictions and
``is_new`` flags (True where the individual has no database image).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ["stage", "dataset", "BAKS", "BAUS", "score", "new_share"]


def _balanced(correct: np.ndarray, groups: np.ndarray) -> float:
    if len(groups) == 0:
        return float("nan")
    per_group = pd.Series(correct.astype(float)).groupby(pd.Series(groups)).mean()
    return float(per_group.mean())


def baks(y_true: Sequence[str], y_pred: Sequence[str], is_new: Sequence[bool]) -> float:
    """Balanced accuracy on known individuals; NaN when the query has none."""
    y_true, y_pred, known = np.asarray(y_true, object), np.asarray(y_pred, object), ~np.asarray(is_new, bool)
    return _balanced(y_true[known] == y_pred[known], y_true[known])


def baus(y_true: Sequence[str], y_pred: Sequence[str], is_new: Sequence[bool]) -> float:
    """Balanced accuracy on unknown individuals (share predicted ``new_individual``); NaN if none."""
    y_true, y_pred, new = np.asarray(y_true, object), np.asarray(y_pred, object), np.asarray(is_new, bool)
    return _balanced(y_pred[new] == NEW_INDIVIDUAL, y_true[new])


def geometric_score(baks_value: float, baus_value: float) -> float:
    """``sqrt(BAKS * BAUS)`` with NaN counted as 0, as on the leaderboard."""
    value = math.sqrt(baks_value * baus_value) if not (math.isnan(baks_value) or math.isnan(baus_value)) else 0.0
    return float(value)


def score_predictions(y_true, y_pred, is_new) -> dict[str, float]:
    """BAKS, BAUS, score and the share of ``new_individual`` predictions for one dataset."""
    b_k, b_u = baks(y_true, y_pred, is_new), baus(y_true, y_pred, is_new)
    y_pred = np.asarray(y_pred, object)
    new_share = float(np.mean(y_pred == NEW_INDIVIDUAL)) if len(y_pred) else float("nan")
    return {"BAKS": b_k, "BAUS": b_u, "score": geometric_score(b_k, b_u), "new_share": new_share}


def join_solution(predictions: pd.DataFrame, solution: pd.DataFrame) -> pd.DataFrame:
    """Align predictions (``image_id, identity``) to the solution (``image_id, identity, dataset, new``).

    Raises ``ValueError`` naming the problem when an image is missing or predicted twice.
    """
    dup = predictions["image_id"][predictions["image_id"].duplicated()]
    if len(dup):
        raise ValueError(f"predictions list {len(dup)} image(s) twice, e.g. {dup.iloc[0]!r}")
    merged = solution.merge(
        predictions[["image_id", "identity"]].rename(columns={"identity": "predicted"}),
        on="image_id",
        how="left",
    )
    missing = merged["predicted"].isna()
    if missing.any():
        raise ValueError(
            f"predictions miss {int(missing.sum())} query image(s) of the solution, "
            f"e.g. {merged.loc[missing, 'image_id'].iloc[0]!r}"
        )
    return merged


def score_table(stage: str, predictions: pd.DataFrame, solution: pd.DataFrame) -> pd.DataFrame:
    """Rows ``stage, dataset, BAKS, BAUS, score, new_share`` per dataset plus a ``dataset=ALL`` row.

    The ``ALL`` row's score is the mean of the dataset scores (the leaderboard's final score); its
    BAKS/BAUS are the means of the dataset values (ignoring NaN) and its new_share is over all images.
    """
    merged = join_solution(predictions, solution)
    rows = []
    for dataset, part in merged.groupby("dataset", sort=True):
        is_new = part["new"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        rows.append(
            {"stage": stage, "dataset": dataset, **score_predictions(part["identity"], part["predicted"], is_new)}
        )
    table = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    all_row = {
        "stage": stage,
        "dataset": "ALL",
        "BAKS": float(table["BAKS"].mean()) if len(table) else float("nan"),
        "BAUS": float(table["BAUS"].mean()) if len(table) else float("nan"),
        "score": float(table["score"].mean()) if len(table) else float("nan"),
        "new_share": float(np.mean(merged["predicted"] == NEW_INDIVIDUAL)) if len(merged) else float("nan"),
    }
    return pd.concat([table, pd.DataFrame([all_row])], ignore_index=True)
