"""``cascade: auto``: choose a dataset's cascade (stages, order, thresholds) on the gallery alone.

Inputs
    ``{source: pseudo.parquet table}`` (:data:`workflow.thresholds.PSEUDO_COLUMNS`): every source stage's top
    identity and top score for the pseudo-queries of the simulated open-set splits of the gallery (split ``i`` is
    the same split in every table; a trained source may hold fewer splits). No query truth is read.
Outputs
    :func:`choose_cascade` returns ``(steps, report)``: the chosen list of cascade steps (the format of
    :mod:`workflow.cascade`, thresholds on each source's own ``top_score`` scale) and a JSON-ready report with the
    simulated score of the choice and of every single stage, written to ``choice.json`` by the cascade rule.

The search, on the splits that every source holds (scores are means of ``sqrt(BAKS * BAUS)`` over those splits):

1. Every single stage at its robust threshold (``new_below`` in the middle of the plateau of its simulated score
   on a grid of quantiles of its scores, :func:`workflow.robust.plateau_pick`); the best single stage is the
   simplest (the order of :data:`workflow.stages.SOURCES`) of those within the spread of the highest one
   (:func:`simplest_within_spread`).
2. Every ordered pair ``A -> B``: ``A`` labels with ``new_below a``, then ``B`` overrides where its score is
   ``>= b`` and sets new where it is ``< c`` (``c <= b``; either may be left out), with ``a, b, c`` searched
   jointly on a grid of quantiles of each source's pseudo scores: the paper's step kinds.
3. Greedily, further override steps of the remaining sources on top of the best cascade so far.
4. The agreement family: a first step ``A`` whose threshold drops from ``a`` to ``a2`` where another stage ``B``
   names the same individual (``agree_with``; both thresholds on a grid of ``A``'s quantiles), grown as in 3;
   it replaces the cascade of 1-3 when its simulated score is higher by more than ``min_gain``, or within
   ``min_gain`` with fewer thresholds (two stages that agree on an individual are right far more often than
   either alone, a signal the override steps cannot express).

A cascade with more steps is kept only when it beats the best one with fewer steps by more than ``min_gain`` and
more than the standard error over the splits of their per-split difference (:func:`beats`), so the choice is, by
construction, never worse on the simulated splits than the chosen single stage (which is always a candidate).
Against thresholds fitted to noise, a held-out check (:func:`held_out_check`) repeats the search on the even
splits and allows a multi-step cascade only when that one beats the best single stage on the odd splits; else the
best single stage is chosen.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workflow.robust import EPS, plateau_pick, prefer_simpler, standard_error
from workflow.stages import SOURCES

logger = logging.getLogger(__name__)

NEW = -1  # state code: new_individual (a source index otherwise)


@dataclass
class PseudoData:
    """Pseudo-queries of the common splits, aligned across sources (``Q`` rows, all splits concatenated)."""

    sources: list[str]
    split: np.ndarray  # [Q] split index 0..S-1 (renumbered)
    score: np.ndarray  # [M x Q] each source's top score (-inf where none)
    has: np.ndarray  # [M x Q] the source has a label (identity not empty and finite score)
    correct: np.ndarray  # [M x Q] the source's identity is the truth (False for pseudo-new queries)
    known_weight: np.ndarray  # [Q] weight of a known pseudo-query in its split's BAKS (0 for new ones)
    new_weight: np.ndarray  # [Q] weight of a new pseudo-query in its split's BAUS (0 for known ones)
    has_known: np.ndarray  # [S] the split has known pseudo-queries
    has_new: np.ndarray  # [S] the split has new pseudo-queries
    n_splits: int
    ident: np.ndarray | None = None  # [M x Q] each source's top identity as a code (-1 where none)


def align(tables: Mapping[str, pd.DataFrame]) -> PseudoData:
    """Align the pseudo tables of ``tables`` on the splits they all hold (by ``split, image_id``)."""
    if not tables:
        raise ValueError("cascade auto needs at least one source's pseudo.parquet")
    sources = sorted(tables)
    common = set.intersection(*(set(t["split"].unique()) for t in tables.values()))
    if not common:
        raise ValueError(f"the pseudo tables of {sources} share no split; rerun their stages with the same "
                         "threshold_tuning")  # fmt: skip
    base = tables[sources[0]]
    base = base[base["split"].isin(common)].sort_values(["split", "image_id"], kind="stable").reset_index(drop=True)
    key = base[["split", "image_id"]]
    truth = base["truth"].astype(str).to_numpy(object)
    is_new = base["is_new"].to_numpy(bool)
    score, has, correct, idents = [], [], [], []
    for name in sources:
        t = tables[name]
        if t.duplicated(["split", "image_id"]).any():
            raise ValueError(f"pseudo table of {name!r} has duplicated (split, image_id) rows")
        m = key.merge(t[["split", "image_id", "identity", "score", "truth"]], on=["split", "image_id"], how="left")
        if m["truth"].isna().any() or (m["truth"].astype(str).to_numpy(object) != truth).any():
            raise ValueError(f"pseudo table of {name!r} does not hold the same pseudo-queries as {sources[0]!r}: "
                             "the stages were run with different threshold_tuning or data")  # fmt: skip
        ident = m["identity"].fillna("").astype(str).to_numpy(object)
        s = pd.to_numeric(m["score"], errors="coerce").to_numpy(np.float64)
        ok = (ident != "") & np.isfinite(s)
        score.append(np.where(ok, s, -np.inf))
        has.append(ok)
        correct.append(ok & (ident == truth) & ~is_new)
        idents.append(np.where(ok, ident, ""))
    split_codes, split = np.unique(base["split"].to_numpy(np.int64), return_inverse=True)
    n = len(split_codes)
    known_w, new_w = np.zeros(len(base)), np.zeros(len(base))
    has_known, has_new = np.zeros(n, bool), np.zeros(n, bool)
    for s in range(n):
        for mask, weight, flag in ((~is_new, known_w, has_known), (is_new, new_w, has_new)):
            rows = np.flatnonzero((split == s) & mask)
            if len(rows) == 0:
                continue
            flag[s] = True
            ids, inverse, counts = np.unique(truth[rows], return_inverse=True, return_counts=True)
            weight[rows] = 1.0 / (counts[inverse] * len(ids))
    codes = pd.factorize(np.concatenate(idents))[0].reshape(len(sources), -1) if idents else None
    codes = np.where(np.array(has), codes, -1) if codes is not None else None
    return PseudoData(sources, split, np.array(score), np.array(has), np.array(correct), known_w, new_w,
                      has_known, has_new, n, codes)  # fmt: skip


def apply_steps(data: PseudoData, steps: Sequence[Mapping]) -> np.ndarray:
    """The state ``[Q]`` (source index of the label, or :data:`NEW`) after ``steps``: :func:`run_cascade` rules."""
    index = {name: i for i, name in enumerate(data.sources)}
    first = steps[0]
    j = index[first["source"]]
    new = ~data.has[j]
    if "agree_with" in first:
        k = index[first["agree_with"]]
        agree = data.has[k] & (data.ident[k] == data.ident[j])
        new |= data.score[j] < np.where(agree, first["agree_new_below"], first["new_below"])
    elif "new_below" in first:
        new |= data.score[j] < first["new_below"]
    state = np.where(new, NEW, j)
    for step in steps[1:]:
        j = index[step["source"]]
        s = data.score[j]
        override = np.zeros(len(state), bool)
        if "override_above" in step:
            override = data.has[j] & (s > step["override_above"])
        elif "override_at_or_above" in step:
            override = data.has[j] & (s >= step["override_at_or_above"])
        state = np.where(override, j, state)
        if "new_below" in step:
            state = np.where(data.has[j] & ~override & (s < step["new_below"]), NEW, state)
    return state


def evaluate_splits(data: PseudoData, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-split ``(score, BAKS, BAUS)``, each ``[K x S]``, of ``K`` states ``[K x Q]`` (score 0 where undefined)."""
    states = np.atleast_2d(states)
    rows = np.arange(states.shape[1])
    labelled = states != NEW
    correct = labelled & data.correct[np.where(labelled, states, 0), rows]
    onehot = np.zeros((states.shape[1], data.n_splits))
    onehot[rows, data.split] = 1.0
    baks = (correct * data.known_weight) @ onehot  # [K x S]
    baus = (~labelled * data.new_weight) @ onehot
    score = np.where(data.has_known & data.has_new, np.sqrt(baks * baus), 0.0)
    return score, baks, baus


def evaluate_many(data: PseudoData, states: np.ndarray) -> np.ndarray:
    """``[K x 3]`` mean over splits of (score, BAKS, BAUS) of ``K`` states ``[K x Q]`` (NaN counts as 0)."""
    score, baks, baus = evaluate_splits(data, states)
    k = len(score)
    mean_k = baks[:, data.has_known].mean(axis=1) if data.has_known.any() else np.zeros(k)
    mean_u = baus[:, data.has_new].mean(axis=1) if data.has_new.any() else np.zeros(k)
    return np.stack([score.mean(axis=1), mean_k, mean_u], axis=1)


def split_scores(data: PseudoData, steps: Sequence[Mapping]) -> np.ndarray:
    """Per-split simulated scores ``[S]`` of one cascade."""
    return evaluate_splits(data, apply_steps(data, steps)[None])[0][0]


def evaluate(data: PseudoData, state: np.ndarray) -> dict[str, float]:
    """Mean over splits of BAKS, BAUS and ``sqrt(BAKS * BAUS)`` of one state ``[Q]``."""
    score, baks, baus = evaluate_many(data, state[None])[0]
    return {"score": float(score), "BAKS": float(baks), "BAUS": float(baus)}


def grid(data: PseudoData, source: str, size: int) -> np.ndarray:
    """Candidate thresholds of ``source``: quantiles of its finite pseudo scores."""
    s = data.score[data.sources.index(source)]
    s = s[np.isfinite(s)]
    return np.unique(np.quantile(s, np.linspace(0, 1, size))) if len(s) else np.zeros(0)


def _best(data: PseudoData, candidates) -> tuple[float, list[dict], dict]:
    """The best of ``candidates`` (lists of steps), evaluated in blocks; the first one wins ties."""
    candidates = list(candidates)
    best: tuple[float, list[dict], dict] = (-1.0, [], {})
    for start in range(0, len(candidates), 256):
        block = candidates[start : start + 256]
        result = evaluate_many(data, np.stack([apply_steps(data, steps) for steps in block]))
        i = int(np.argmax(result[:, 0]))
        if result[i, 0] > best[0] + 1e-12:
            best = (float(result[i, 0]), block[i], dict(zip(("score", "BAKS", "BAUS"), map(float, result[i]))))
    return best


def single_stage(data: PseudoData, source: str, grid_size: int) -> tuple[float, list[dict], dict]:
    """The robust ``[{source, new_below}]`` (or no threshold) on the pseudo splits.

    The threshold is the middle of the plateau of the mean score (:func:`workflow.robust.plateau_pick`), not the
    highest point of a flat top, so that noise in the last digits of the scores does not move it.
    """
    thresholds = np.concatenate([[-np.inf], grid(data, source, grid_size)])  # -inf: no threshold
    cands = [[{"source": source}], *([{"source": source, "new_below": float(t)}] for t in thresholds[1:])]
    per_split = evaluate_splits(data, np.stack([apply_steps(data, steps) for steps in cands]))[0]
    pick = plateau_pick(thresholds, per_split.T)
    steps = cands[pick.index]
    result = dict(zip(("score", "BAKS", "BAUS"), map(float, evaluate_many(data, apply_steps(data, steps))[0])))
    return result["score"], steps, result


def simplest_within_spread(data: PseudoData, singles: Mapping[str, tuple]) -> tuple[str, float]:
    """The best single stage, where stages within the spread of the best count as equal and the simplest wins.

    The tolerance of each stage is the standard error over the splits of its score difference with the best one;
    "simplest" follows the order of :data:`workflow.stages.SOURCES` (fewer stages in the pipeline, no re-ranking
    before re-ranking).
    Returns the stage and the tolerance it was chosen within.
    """
    top = max(data.sources, key=lambda n: (singles[n][0], -data.sources.index(n)))
    top_scores = split_scores(data, singles[top][1])
    tied = {}
    for name in data.sources:
        diff = top_scores - split_scores(data, singles[name][1])
        tolerance = standard_error(diff)
        if singles[top][0] - singles[name][0] <= tolerance + EPS:
            tied[name] = tolerance
    name = min(tied, key=lambda n: (SOURCES.index(n) if n in SOURCES else len(SOURCES), n))
    return name, tied[name]


def _later_steps(data: PseudoData, source: str, size: int) -> list[dict]:
    """Later-step candidates of ``source``: override at or above ``b`` and/or new below ``c <= b``."""
    g = [float(t) for t in grid(data, source, size)]
    out = []
    for b in [*g, None]:
        for c in [None, *(t for t in g if b is None or t <= b)]:
            step = {"source": source}
            if b is not None:
                step["override_at_or_above"] = b
            if c is not None:
                step["new_below"] = c
            if len(step) > 1:
                out.append(step)
    return out


def _extend(data: PseudoData, prefixes: list[list[dict]], source: str, size: int) -> tuple[float, list[dict], dict]:
    """The best ``prefix + [later step of source]`` over every prefix and later-step candidate (vectorised)."""
    base = np.stack([apply_steps(data, steps) for steps in prefixes])  # [P x Q]
    j = data.sources.index(source)
    s, has = data.score[j], data.has[j]
    best: tuple[float, list[dict], dict] = (-1.0, [], {})
    for step in _later_steps(data, source, size):
        override = has & (s >= step.get("override_at_or_above", np.inf))
        new = has & ~override & (s < step.get("new_below", -np.inf))
        states = np.where(override, j, np.where(new, NEW, base))
        result = evaluate_many(data, states)
        i = int(np.argmax(result[:, 0]))
        if result[i, 0] > best[0] + 1e-12:
            best = (
                float(result[i, 0]),
                [*prefixes[i], step],
                dict(zip(("score", "BAKS", "BAUS"), map(float, result[i]))),
            )
    return best


def subset(data: PseudoData, splits: np.ndarray) -> PseudoData:
    """The pseudo-queries of ``splits`` (indices ``0..S-1`` of ``data``), splits renumbered."""
    keep = np.isin(data.split, splits)
    codes = np.full(data.n_splits, -1)
    codes[np.sort(splits)] = np.arange(len(splits))
    sel = np.sort(splits)
    return PseudoData(data.sources, codes[data.split[keep]], data.score[:, keep], data.has[:, keep],
                      data.correct[:, keep], data.known_weight[keep], data.new_weight[keep], data.has_known[sel],
                      data.has_new[sel], len(splits),
                      None if data.ident is None else data.ident[:, keep])  # fmt: skip


def beats(data: PseudoData, cand: tuple, best: tuple, min_gain: float) -> bool:
    """Whether cascade ``cand`` beats ``best`` (both ``(score, steps, result)``) by more than the spread of their
    per-split difference and ``min_gain`` (:func:`workflow.robust.prefer_simpler`)."""
    if cand[0] <= best[0] + min_gain:
        return False
    return prefer_simpler(split_scores(data, best[1]), split_scores(data, cand[1]), min_gain=min_gain)[0]


def search(data: PseudoData, grid_size: int, min_gain: float, max_steps: int):
    """``(best, singles, best_name, evaluated)``: the best cascade ``(score, steps, result)`` and each single
    stage's (the best single stage chosen by :func:`simplest_within_spread`)."""
    singles = {name: single_stage(data, name, 4 * grid_size + 1) for name in data.sources}
    best_name, _ = simplest_within_spread(data, singles)
    best = singles[best_name]
    evaluated = sum(len(grid(data, n, 4 * grid_size + 1)) + 1 for n in data.sources)
    if max_steps >= 2:
        for a, b in itertools.permutations(data.sources, 2):
            firsts = [[{"source": a}], *([{"source": a, "new_below": float(t)}] for t in grid(data, a, grid_size))]
            evaluated += len(firsts) * len(_later_steps(data, b, grid_size))
            pair = _extend(data, firsts, b, grid_size)
            if pair[0] > best[0] + min_gain and (len(best[1]) > 1 or beats(data, pair, best, min_gain)):
                best = pair
    best, evaluated = _grow(data, best, grid_size, min_gain, max_steps, evaluated)
    if max_steps >= 2 and data.ident is not None:
        # The agreement family (first step with agree_with), grown the same way; the better of the two wins.
        agree = _best_agreement(data, grid_size)
        evaluated += agree[3]
        if beats(data, agree[:3], singles[best_name], min_gain):
            grown, evaluated = _grow(data, agree[:3], grid_size, min_gain, max_steps, evaluated)
            # Within min_gain of each other the simpler rule (fewer thresholds) wins, as for added steps.
            if grown[0] > best[0] + min_gain or (grown[0] > best[0] - min_gain and _size(grown[1]) < _size(best[1])):
                best = grown
    return best, singles, best_name, evaluated


def _n_sources(steps: Sequence[Mapping]) -> int:
    """The number of stages a cascade reads (an agreement step reads two)."""
    return len({step["source"] for step in steps} | {step["agree_with"] for step in steps if "agree_with" in step})


def _size(steps: Sequence[Mapping]) -> int:
    """The number of thresholds of a cascade (its complexity for the ``min_gain`` rule)."""
    return sum(1 for step in steps for key in step if key not in ("source", "agree_with"))


def _grow(data: PseudoData, best, grid_size: int, min_gain: float, max_steps: int, evaluated: int):
    """Greedily add override steps of unused sources to a cascade of two or more sources while each gains."""
    while len(best[1]) < max_steps and (len(best[1]) >= 2 or "agree_with" in best[1][0]):
        used = {step["source"] for step in best[1]}
        more = (-1.0, [], {})
        for name in (n for n in data.sources if n not in used):
            evaluated += len(_later_steps(data, name, grid_size))
            cand = _extend(data, [best[1]], name, grid_size)
            if cand[0] > more[0]:
                more = cand
        if not beats(data, more, best, min_gain):
            break
        best = more
    return best, evaluated


def _best_agreement(data: PseudoData, grid_size: int) -> tuple[float, list[dict], dict, int]:
    """The best agreement first step ``{A, new_below a, agree_with B, agree_new_below a2 <= a}`` over ordered pairs.

    Returns ``(score, steps, result, candidates evaluated)``; it counts as a two-source cascade (it must beat the
    single stages by ``min_gain`` and pass the held-out check).
    """
    best: tuple[float, list[dict], dict] = (-1.0, [], {})
    count = 0
    for a, b in itertools.permutations(data.sources, 2):
        g = [float(t) for t in grid(data, a, grid_size)]
        cands = [[{"source": a, "new_below": hi, "agree_with": b, "agree_new_below": lo}]
                 for hi in g for lo in g if lo < hi]  # fmt: skip
        count += len(cands)
        cand = _best(data, cands) if cands else best
        if cand[0] > best[0] + 1e-12:
            best = cand
    return (*best, count)


def held_out_check(data: PseudoData, grid_size: int, min_gain: float, max_steps: int) -> dict | None:
    """Search on the even splits, score the choice and the best single stage on the odd ones (None if < 2 splits).

    A multi-step cascade that does not beat the single stage on the held-out splits was fitted to noise.
    """
    if data.n_splits < 2:
        return None
    fit, held = subset(data, np.arange(0, data.n_splits, 2)), subset(data, np.arange(1, data.n_splits, 2))
    best, singles, best_name, _ = search(fit, grid_size, min_gain, max_steps)
    chosen = evaluate(held, apply_steps(held, best[1]))["score"]
    single = evaluate(held, apply_steps(held, singles[best_name][1]))["score"]
    return {"steps": best[1], "held_out_score": round(chosen, 6), "single_stage": best_name,
            "single_stage_held_out_score": round(single, 6), "multi_step_holds": bool(chosen > single)}  # fmt: skip


def choose_cascade(
    tables: Mapping[str, pd.DataFrame],
    *,
    grid_size: int = 21,
    min_gain: float = 0.002,
    max_steps: int = 3,
    held_out: bool = True,
) -> tuple[list[dict], dict]:
    """The cascade of best mean simulated score (see the module docstring) and a JSON-ready report.

    With ``held_out``, a cascade of several stages is allowed only when the search on half of the splits chose
    several and that choice beats the best single stage on the other half (:func:`held_out_check`); else the best
    single stage is chosen.
    """
    most = max(t["split"].nunique() for t in tables.values())
    left_out = {n: int(t["split"].nunique()) for n, t in tables.items() if t["split"].nunique() < most}
    if left_out:
        # A source simulated on fewer splits would cut every comparison down to its splits (with one split there is
        # no spread to judge a gain by, and no held-out half): it is left out of the search instead.
        logger.warning("cascade auto: %s left out: simulated on fewer splits than the other sources (%d); raise "
                       "threshold_tuning.trained_repeats to %d to include them", left_out, most, most)  # fmt: skip
        tables = {n: t for n, t in tables.items() if n not in left_out}
    data = align(tables)
    check = held_out_check(data, grid_size, min_gain, max_steps) if held_out and max_steps >= 2 else None
    # Several sources only when the search on the even splits chose several and that choice held on the odd ones.
    several = check is None or (_n_sources(check["steps"]) > 1 and check["multi_step_holds"])
    limit = max_steps if several else 1
    best, singles, best_name, evaluated = search(data, grid_size, min_gain, limit)
    score, steps, result = best
    report = {
        "steps": steps,
        "simulated": {k: round(v, 6) for k, v in result.items()},
        "single_stages": {
            n: {"steps": singles[n][1], **{k: round(v, 6) for k, v in singles[n][2].items()}} for n in data.sources
        },  # fmt: skip
        "best_single_stage": best_name,
        "held_out_check": check,
        "splits": data.n_splits,
        "left_out": {n: f"simulated on {k} split(s), the others on {most}" for n, k in left_out.items()},
        "pseudo_queries": int(len(data.split)),
        "candidates_evaluated": int(evaluated),
        "search": {"grid_size": grid_size, "min_gain": min_gain, "max_steps": max_steps, "held_out": held_out},
    }
    logger.info("cascade auto: %s, simulated score %.4f (BAKS %.4f, BAUS %.4f) over %d split(s); best single stage "
                "%s %.4f; %d candidates; held-out check %s", steps, result["score"], result["BAKS"], result["BAUS"],
                data.n_splits, best_name, singles[best_name][0], evaluated, check)  # fmt: skip
    return steps, report
