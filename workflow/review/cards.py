"""Review cards: what a person sees of each query, and the order that puts the uncertain ones first.

Inputs (tables, no files)
    ``pairs``: the WildFusion pair table (``query, candidate, kind, fused``; only ``kind == "query"`` rows count),
    ``meta``: the dataset's table (``image_id, identity, split``), ``decision``: the submitted stage's predictions
    (``image_id, identity`` and, from the cascade, ``decided_by``, ``top_score``), ``stages``: ``{stage: predictions}``
    of every stage run, ``threshold``: the WildFusion threshold on the fused score, ``clusters``: discovery's
    ``image_id, cluster`` (may be empty).
Outputs
    :func:`review_table`: one row per query with its priority; :func:`card_records`: the JSON-ready cards.

Priority (higher = look first), the mean of three terms in ``[0, 1]``:
``near`` = ``max(0, 1 - |fused - threshold| / band)`` (the best candidate's calibrated score close to the
threshold), ``tight`` = ``max(0, 1 - margin / band)`` (``margin``: best identity's fused score minus the second
best identity's, or minus 0 when only one identity was shortlisted) and ``disagree`` = the share of the other
stages whose label differs from the submitted one. A query is *uncertain* when its priority is above 0 and among
the highest ``uncertain_share`` of the queries (``ceil(share x queries)`` cards; ties at the cut by image id).

Candidates are individuals, not images (:func:`top_candidates`): each of the ``k`` best identities by its best
image's fused score, shown by that image, with how many of its images were shortlisted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workflow import NEW_INDIVIDUAL

REVIEW_COLUMNS = [
    "image_id",
    "identity",
    "decided_by",
    "decider_score",
    "fused",
    "best_candidate",
    "margin",
    "near",
    "tight",
    "disagree",
    "priority",
    "uncertain",
    "cluster",
]
CANDIDATE_COLUMNS = ["query", "rank", "candidate", "identity", "score", "images"]


def _ranked_images(pairs: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Every shortlisted gallery image of each query, best ``fused`` first: ``query, candidate, identity, score``."""
    q = pairs.loc[pairs["kind"] == "query", ["query", "candidate", "fused"]].copy()
    q["query"], q["candidate"] = q["query"].astype(str), q["candidate"].astype(str)
    identity = dict(zip(meta["image_id"].astype(str), meta["identity"].astype(str)))
    q["identity"] = q["candidate"].map(identity).fillna("")
    q["score"] = pd.to_numeric(q["fused"], errors="coerce").astype(float)
    return q.sort_values(["query", "score", "candidate"], ascending=[True, False, True], kind="stable")


def top_candidates(pairs: pd.DataFrame, meta: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` best individuals of each query: ``query, rank, candidate, identity, score, images``.

    ``candidate`` is the individual's best-``fused`` image (its ``score``), ``images`` how many of its images were
    shortlisted for the query. ``rank`` counts from 1; ties are broken by candidate id (reproducible).
    """
    q = pairs.loc[pairs["kind"] == "query"]
    if q.empty or k < 1:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "score" else object) for c in CANDIDATE_COLUMNS})
    ranked = _ranked_images(pairs, meta)
    images = ranked.groupby(["query", "identity"])["candidate"].transform("size")
    best = ranked.assign(images=images).drop_duplicates(["query", "identity"], keep="first").copy()
    best["rank"] = best.groupby("query").cumcount() + 1
    return best.loc[best["rank"] <= k, CANDIDATE_COLUMNS].reset_index(drop=True)


def _top_images(pairs: pd.DataFrame, meta: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` best-``fused`` gallery images of each query (any identity), with ``rank``."""
    columns = ["query", "rank", "candidate", "identity", "score"]
    if pairs.loc[pairs["kind"] == "query"].empty or k < 1:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "score" else object) for c in columns})
    q = _ranked_images(pairs, meta)
    q["rank"] = q.groupby("query").cumcount() + 1
    return q.loc[q["rank"] <= k, columns].reset_index(drop=True)


def identity_margins(pairs: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Per query: the best fused score, its candidate, and the margin to the best score of another identity."""
    all_cands = _top_images(pairs, meta, k=10**9)
    if all_cands.empty:
        return pd.DataFrame(
            {
                "query": pd.Series(dtype=object),
                "fused": pd.Series(dtype=float),
                "best_candidate": pd.Series(dtype=object),
                "margin": pd.Series(dtype=float),
            }
        )
    per_identity = (
        all_cands.groupby(["query", "identity"], sort=False)["score"]
        .max()
        .reset_index()
        .sort_values(["query", "score"], ascending=[True, False], kind="stable")
    )
    second = per_identity.groupby("query")["score"].nth(1)
    second = pd.Series(second.to_numpy(), index=per_identity.loc[second.index, "query"].to_numpy())
    best = all_cands[all_cands["rank"] == 1].set_index("query")
    out = pd.DataFrame({"query": best.index, "fused": best["score"].to_numpy(), "best_candidate": best["candidate"]})
    out["margin"] = out["fused"] - out["query"].map(second).fillna(0.0).to_numpy()
    return out.reset_index(drop=True)


def review_table(
    pairs: pd.DataFrame,
    meta: pd.DataFrame,
    decision: pd.DataFrame,
    stages: dict[str, pd.DataFrame],
    threshold: float,
    clusters: pd.DataFrame | None = None,
    band: float = 0.1,
    uncertain_share: float = 0.2,
) -> pd.DataFrame:
    """One row per query of ``decision`` (:data:`REVIEW_COLUMNS`), highest priority first (ties: by image id)."""
    if not band > 0:
        raise ValueError(f"review band must be > 0, got {band!r}")
    dec = decision.copy()
    dec["image_id"] = dec["image_id"].astype(str)
    out = pd.DataFrame({"image_id": dec["image_id"], "identity": dec["identity"].fillna("").astype(str)})
    out["decided_by"] = dec["decided_by"].fillna("").astype(str) if "decided_by" in dec else ""
    score = pd.to_numeric(dec["top_score"], errors="coerce") if "top_score" in dec else np.nan
    out["decider_score"] = score
    margins = identity_margins(pairs, meta).set_index("query")
    out["fused"] = out["image_id"].map(margins["fused"]).astype(float)
    out["best_candidate"] = out["image_id"].map(margins["best_candidate"]).astype(object).fillna("")
    out["margin"] = out["image_id"].map(margins["margin"]).astype(float)
    fused = out["fused"].to_numpy(float)
    out["near"] = np.where(np.isfinite(fused), np.clip(1 - np.abs(fused - threshold) / band, 0, 1), 0.0)
    margin = out["margin"].to_numpy(float)
    out["tight"] = np.where(np.isfinite(margin), np.clip(1 - margin / band, 0, 1), 0.0)
    labels = out.set_index("image_id")["identity"]
    votes = []
    for table in stages.values():
        other = table.assign(image_id=table["image_id"].astype(str)).set_index("image_id")["identity"]
        other = other.astype(str).reindex(labels.index)
        votes.append((other != labels).to_numpy() & other.notna().to_numpy())
    out["disagree"] = np.mean(votes, axis=0) if votes else 0.0
    out["priority"] = (out["near"] + out["tight"] + out["disagree"]) / 3
    cluster = {}
    if clusters is not None and len(clusters):
        found = clusters
        if "anchored" in clusters:  # discovered individuals only: an anchored photo keeps its known individual
            found = clusters[~clusters["anchored"].astype(str).str.lower().isin(["true", "1"])]
        cluster = dict(zip(found["image_id"].astype(str), found["cluster"].astype(str)))
    out["cluster"] = [cluster.get(i, "") for i in out["image_id"]]
    out = out.sort_values(["priority", "image_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    flagged = math.ceil(uncertain_share * len(out) - 1e-9)
    out["uncertain"] = (out.index < flagged) & (out["priority"] > 0)
    return out[REVIEW_COLUMNS]


def _f(x: float) -> str:
    return f"{x:.3f}"


def explain(stage: str, decided_by: str, identity: str, score: float, decider: dict) -> str:
    """The decision of one query in plain words: which stage decided, its score and its own threshold.

    ``decider``: the submitted stage's ``threshold.json`` (``threshold``) or, for the cascade, its ``choice.json``
    (``steps``); ``decided_by``: ``<source>:label|new|override`` of the cascade (empty for a single stage).
    """
    source, _, action = decided_by.partition(":") if decided_by else (stage, "", "new" if identity == NEW_INDIVIDUAL
                                                                                  else "label")  # fmt: skip
    who = "a new individual" if identity == NEW_INDIVIDUAL else f"{identity}"
    if not math.isfinite(score):
        return f"{source} decided {who} (no score)"
    steps = [st for st in decider.get("steps", []) if isinstance(st, dict) and st.get("source") == source]
    if "threshold" in decider and not steps:
        steps = [{"source": source, "new_below": float(decider["threshold"])}]
    if action == "override":
        step = next((st for st in steps if "override_above" in st or "override_at_or_above" in st), None)
        if step:
            t = step.get("override_above", step.get("override_at_or_above"))
            return (f"{source} overruled the earlier step: its score {_f(score)} is above its override "
                    f"threshold {_f(t)}, so {who}")  # fmt: skip
    step = next((st for st in steps if "new_below" in st), None)
    if step is None:
        return f"{source} decided {who} with score {_f(score)}"
    limit = f"its threshold {_f(step['new_below'])}"
    if "agree_with" in step:
        limit = (f"its threshold ({_f(step['agree_new_below'])} when {step['agree_with']} names the same "
                 f"individual, else {_f(step['new_below'])})")  # fmt: skip
    if action == "new":
        return f"{source} score {_f(score)} is below {limit}: {who}"
    return f"{source} score {_f(score)} is at or above {limit}: {who}"


def _num(value) -> float | None:
    """A JSON-safe number (None for NaN)."""
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def lazy_lines(review: pd.DataFrame, lines: dict[tuple[str, str], dict]) -> dict[str, dict[str, dict]]:
    """``{query: {candidate: lines}}`` of every drawn pair but the best of its card: the page parses these only
    when one is first shown, so that they do not slow the first screen."""
    best = set(zip(review["image_id"], review["best_candidate"]))
    out: dict[str, dict[str, dict]] = {}
    for (query, candidate), entry in lines.items():
        if (query, candidate) not in best:
            out.setdefault(query, {})[candidate] = entry
    return out


def card_records(
    review: pd.DataFrame,
    candidates: pd.DataFrame,
    stages: dict[str, pd.DataFrame],
    lines: dict[tuple[str, str], dict],
    stage: str = "",
    decider: dict | None = None,
) -> list[dict]:
    """The page's cards in ``review`` order; ``lines[query, candidate]`` holds the match lines of a pair (if drawn):
    the card's ``matches`` are its best pair's; another candidate's ``lines`` says whether it has its own (they
    are in the page's lazy block, :func:`lazy_lines`); ``why``: the decision in plain words (:func:`explain`, with
    the submitted ``stage``'s ``decider`` file)."""
    by_query = {q: part for q, part in candidates.groupby("query", sort=False)}
    labels = {
        name: dict(zip(t["image_id"].astype(str), t["identity"].fillna("").astype(str))) for name, t in stages.items()
    }
    cards = []
    for row in review.itertuples(index=False):
        part = by_query.get(row.image_id)
        cands = (
            []
            if part is None
            else [
                {
                    "image_id": c.candidate,
                    "identity": c.identity,
                    "score": _num(c.score),
                    "images": int(c.images),
                    "lines": c.candidate != row.best_candidate and (row.image_id, c.candidate) in lines,
                }
                for c in part.itertuples(index=False)
            ]
        )
        cards.append(
            {
                "image_id": row.image_id,
                "identity": row.identity,
                "new": row.identity == NEW_INDIVIDUAL,
                "decided_by": row.decided_by,
                "why": explain(stage, row.decided_by, row.identity, float(row.decider_score), decider or {}),
                "decider_score": _num(row.decider_score),
                "fused": _num(row.fused),
                "margin": _num(row.margin),
                "priority": _num(row.priority),
                "uncertain": bool(row.uncertain),
                "cluster": row.cluster,
                "stages": {name: lab.get(row.image_id, "") for name, lab in labels.items()},
                "candidates": cands,
                "matches": lines.get((row.image_id, row.best_candidate)),
            }
        )
    return cards
