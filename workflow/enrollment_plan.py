"""The checks of a decision file (the CSV a review page downloads) against the gallery it was made on.

:func:`plan_enrollment` turns the file into the rows the next gallery version adds, or reports every problem of
the file at once, each with its line and the fix (:mod:`workflow.enrollment` writes the version).
"""

from __future__ import annotations

import re

import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.data import DataValidationError, Problem

DECISIONS = ("accept", "pick", "new", "reject", "unsure")
DECISION_COLUMNS = ["dataset", "image_id", "decision", "identity"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def plan_enrollment(
    meta: pd.DataFrame, decisions: pd.DataFrame, file: str, enrolled: pd.DataFrame, prefix: str = "new_"
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows a decision file adds (``dataset, image_id, identity, decision``) and its counts.

    Args:
        meta: the gallery the decisions were made on (the active version), every dataset.
        decisions: the decision file's table (every column a string).
        file: its path, named by every problem.
        enrolled: the active version's changes (a photo enrolled again with the same identity is skipped).
    Raises:
        DataValidationError: every problem of the file, each with its line and the fix.
    """
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise DataValidationError(
            [
                Problem(
                    file,
                    1,
                    f"missing column(s) {missing}; found {list(decisions.columns)}: "
                    "use the CSV downloaded from a review page",
                )
            ]
        )
    problems = []
    if "run_id" in decisions and "dataset" in decisions:  # one run per dataset: never two pages' decisions mixed
        runs = decisions.assign(line=decisions.index + 2, run_id=decisions["run_id"].str.strip())
        for dataset, part in runs[runs["run_id"] != ""].groupby("dataset", sort=True):
            first = part.groupby("run_id", sort=False)["line"].min()
            if len(first) > 1:
                where = ", ".join(f"run {run} (first on line {line})" for run, line in first.items())
                problems.append(
                    Problem(
                        file,
                        int(first.iloc[1]),
                        f"decisions of {len(first)} review pages (runs) of dataset {dataset!r} in one file: {where}; "
                        "enroll the file downloaded from the current page alone",
                    )
                )
    rows = {(d, i): k for k, (d, i) in enumerate(zip(meta["dataset"], meta["image_id"]))}
    gallery = meta[meta["split"] == "database"]
    known = {d: set(part["identity"]) for d, part in gallery.groupby("dataset")}
    before = dict(zip(enrolled["image_id"], enrolled["identity"]))
    out, counts = [], {"known": 0, "new": 0, "rejected": 0, "already": 0}
    seen: dict[str, int] = {}
    unnamed = []
    for idx, row in decisions.iterrows():
        line = int(idx) + 2
        dataset, image_id = row["dataset"], row["image_id"]
        decision, identity = row["decision"].strip().lower(), row["identity"].strip()
        if image_id in seen:
            problems.append(
                Problem(
                    file,
                    line,
                    f"image_id {image_id!r} is decided again (first on line {seen[image_id]}); keep one row per photo",
                )
            )
            continue
        seen[image_id] = line
        if decision not in DECISIONS:
            problems.append(Problem(file, line, f"decision {row['decision']!r} is not one of {list(DECISIONS)}"))
            continue
        if _CONTROL.search(identity) or identity == NEW_INDIVIDUAL:
            problems.append(
                Problem(
                    file,
                    line,
                    f"identity {identity!r} cannot name an individual (a control "
                    f"character, or the reserved {NEW_INDIVIDUAL!r}); give another name",
                )
            )
            continue
        k = rows.get((dataset, image_id))
        if k is None:
            problems.append(
                Problem(
                    file,
                    line,
                    f"no photo {image_id!r} in dataset {dataset!r} of the data; was the "
                    "page made from another data_root?",
                )
            )
            continue
        if decision in ("reject", "unsure"):  # not enrolled; logged as rejected
            counts["rejected"] += 1
            continue
        if meta["split"].iat[k] == "database":
            if image_id in before and (before[image_id] == identity or (decision == "new" and not identity)):
                counts["already"] += 1
                continue
            what = f"enrolled as {before[image_id]!r}" if image_id in before else "a gallery photo in metadata.csv"
            problems.append(
                Problem(
                    file, line, f"photo {image_id!r} is already {what}; to change that, snakemake enroll_undo first"
                )
            )
            continue
        if decision in ("accept", "pick"):
            if identity not in known.get(dataset, set()):
                problems.append(
                    Problem(
                        file,
                        line,
                        f"identity {identity!r} is not a known individual of {dataset!r}; "
                        "for a new individual use decision new",
                    )
                )
                continue
            counts["known"] += 1
        else:
            if identity in known.get(dataset, set()):
                problems.append(
                    Problem(
                        file,
                        line,
                        f"{identity!r} is already a known individual of {dataset!r}: "
                        "use decision pick, or another name",
                    )
                )
                continue
            counts["new"] += 1
            if not identity:
                unnamed.append(len(out))
        out.append({"dataset": dataset, "image_id": image_id, "identity": identity, "decision": decision})
    if problems:
        raise DataValidationError(problems)
    table = pd.DataFrame(out, columns=["dataset", "image_id", "identity", "decision"])
    for i in unnamed:
        dataset = table.at[i, "dataset"]
        taken = {*known.get(dataset, set()), *table.loc[table["dataset"] == dataset, "identity"]}
        pattern = re.compile(re.escape(f"{prefix}{dataset}_") + r"(\d+)$")
        n = 1 + max((int(m.group(1)) for m in map(pattern.match, taken) if m), default=0)
        table.at[i, "identity"] = f"{prefix}{dataset}_{n}"
    return table, counts
