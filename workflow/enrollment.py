"""Enrollment: the decisions of a review page become the next version of the gallery; undo goes back one.

The user's ``metadata.csv`` is never written. A gallery version is an overlay on it, kept under
``<enrollment_dir>/<data folder name>-<hash of its real path>/`` (:func:`find_enrollment_dir`: the data's real path,
else the fingerprint of its ``metadata.csv``, in ``data.json``):

``v<N>/changes.csv``    every query photo enrolled so far (``dataset, image_id, identity, decision, version,
                        decisions_sha1``): the workflow reads the data through the active version's file
                        (:func:`apply_changes`, called by :mod:`workflow.tables`), so each listed query becomes a
                        database photo of that identity, and photos added to ``metadata.csv`` later are kept;
``v<N>/metadata.csv``   the gallery of that version (``metadata.csv`` with the changes applied), to read or export;
``v<N>/decisions.csv``  a copy of the decision file; ``v<N>/version.json``: its base version, file, sha1 and time;
``active``              the active version number (``0``: the original ``metadata.csv``);
``log.tsv``             one line per enrollment, undo or redo: when, what, from which decision file (and its sha1);
``data.json``           the data's real path and the sha1 of its ``metadata.csv`` (a moved copy finds the folder).

Decision files are the CSV a review page downloads: ``dataset, image_id, decision, identity`` (other columns are
ignored). ``decision`` is ``accept`` or ``pick`` (the photo joins ``identity``, a known individual of its dataset),
``new`` (a new individual: ``identity`` is its name; left empty, each photo gets ``<prefix><dataset>_<n>``),
``reject`` or ``unsure`` (not enrolled); a file holding two runs (``run_id``) of one dataset is refused. Every
problem of the file is reported at once, naming its line and the fix; nothing is written then. Enrolling again,
after an undo, the decisions of a version that was undone makes that version active again (nothing new is
written); ``redo`` does the same for the version the last undo left.

    python -m workflow.enrollment enroll --data-root R --dir D --decisions F [--new-name-prefix new_] [--discovery]
    python -m workflow.enrollment undo --data-root R --dir D
    python -m workflow.enrollment redo --data-root R --dir D [--discovery]
    python -m workflow.enrollment describe --data-root R --dir D --out results/gallery_version.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from workflow.cli import arg, command, run_stage, stage_parser
from workflow.data import DataValidationError, Problem, check_split_coverage, hash_file, read_table, validate_dataset
from workflow.enrollment_find import (  # noqa: F401 (enrollment_dir, find_enrollment_dir: the package's API)
    DATA_FILE,
    _read_json,
    enrollment_dir,
    find_enrollment_dir,
    locate_decisions,
    metadata_fingerprint,
    record_data,
)
from workflow.enrollment_plan import DECISION_COLUMNS, DECISIONS, plan_enrollment  # noqa: F401 (the API)
from workflow.stage_io import atomic_path

logger = logging.getLogger(__name__)

CHANGE_COLUMNS = ["dataset", "image_id", "identity", "decision", "version", "decisions_sha1"]
LOG_COLUMNS = [
    "time",
    "action",
    "version",
    "active",
    "decisions",
    "decisions_sha1",
    "known",
    "new",
    "rejected",
    "already",
]
# Column of the tables (and of a version's metadata.csv) naming the version that enrolled a photo.
ENROLLED = "enrolled"


class EnrollmentError(RuntimeError):
    """Enrollment or undo cannot proceed (nothing to undo, nothing new to enroll, a damaged version folder)."""


def active_version(directory: str | Path) -> int:
    path = Path(directory) / "active"
    if not path.is_file():
        return 0
    text = path.read_text().strip()
    if not text.isdigit():
        raise EnrollmentError(f"{path}: expected a version number, got {text!r}; write the number of a v<N> folder")
    return int(text)


def active_changes_file(directory: str | Path) -> str | None:
    """``changes.csv`` of the active version, or None while the original metadata is active."""
    version = active_version(directory)
    if version == 0:
        return None
    path = Path(directory) / f"v{version}" / "changes.csv"
    if not path.is_file():
        raise EnrollmentError(
            f"{Path(directory) / 'active'} names version {version} but {path} does not exist; "
            "write the number of an existing v<N> folder there (0 = the original metadata.csv)"
        )
    return str(path)


def read_changes(path: str | Path | None) -> pd.DataFrame:
    """The enrolled photos of a version (empty, typed, for None)."""
    if path is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in CHANGE_COLUMNS})
    table = read_table(path)
    missing = [c for c in CHANGE_COLUMNS if c not in table.columns]
    if missing:
        raise DataValidationError([Problem(str(path), 1, f"missing column(s) {missing}: not an enrollment file")])
    return table[CHANGE_COLUMNS]


def apply_changes(
    meta: pd.DataFrame, changes: pd.DataFrame, file: str, meta_file: str = "metadata.csv", discovery: bool = False
) -> tuple[pd.DataFrame, list[Problem]]:
    """``meta`` with each enrolled query turned into a database photo of its identity (a new table).

    When ``changes`` is not empty, column :data:`ENROLLED` holds the version that enrolled each photo (else ``""``).

    Problems name ``file`` (the changes file) and its line: a photo no longer in the metadata, in another dataset,
    or already a gallery photo of another identity. A dataset left without query (or gallery) photos is named by
    its first line in ``meta_file`` (``meta``'s rows, in file order); ``discovery`` (the discovery stage runs)
    accepts a dataset without a gallery, as the data check does.
    """
    out = meta.copy()
    if changes.empty:
        return out, []
    where = {image_id: i for i, image_id in enumerate(out["image_id"])}
    problems = []
    split, identity = out["split"].to_numpy(dtype=object), out["identity"].to_numpy(dtype=object)
    for idx, row in changes.iterrows():
        line, i = int(idx) + 2, where.get(row["image_id"])
        if i is None:
            problems.append(
                Problem(
                    file,
                    line,
                    f"enrolled photo {row['image_id']!r} is no longer in metadata.csv; "
                    "put it back, or go back to an earlier version (snakemake enroll_undo)",
                )
            )
        elif out["dataset"].iat[i] != row["dataset"]:
            problems.append(
                Problem(
                    file,
                    line,
                    f"enrolled photo {row['image_id']!r} is now in dataset "
                    f"{out['dataset'].iat[i]!r}, not {row['dataset']!r}; snakemake enroll_undo",
                )
            )
        elif split[i] == "database" and identity[i] != row["identity"]:
            problems.append(
                Problem(
                    file,
                    line,
                    f"photo {row['image_id']!r} is a gallery photo of "
                    f"{identity[i]!r} in metadata.csv, enrolled as {row['identity']!r}; "
                    "snakemake enroll_undo",
                )
            )
        else:
            split[i], identity[i] = "database", row["identity"]
    out["split"], out["identity"] = split, identity
    version = dict(zip(changes["image_id"], changes["version"]))
    out[ENROLLED] = [version.get(i, "") for i in out["image_id"]]
    coverage = [
        Problem(p.file, p.line, f"with the enrolled photos of {file}, {p.message}")
        for p in check_split_coverage(out, meta_file, discovery=discovery)
    ]
    return out, problems + coverage


def _versions(directory: Path) -> list[int]:
    return sorted(int(p.name[1:]) for p in directory.glob("v*") if p.is_dir() and p.name[1:].isdigit())


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def _csv(df: pd.DataFrame, path: Path) -> None:
    _write_text(path, df.to_csv(index=False))


def _activate(directory: Path, active: int, **entry) -> None:
    """Make version ``active`` the one the workflow reads, then append ``entry`` to the log (undo-safe order).

    A process killed between the two writes leaves the log one line short: :func:`recover_log` (run by the next
    enroll, undo or workflow start) writes that line from the versions' ``version.json``.
    """
    _write_text(directory / "active", f"{active}\n")
    _log(directory, active=active, **entry)


def _logged_active(directory: Path) -> int:
    """The ``active`` column of the log's last line (0 without a log)."""
    path = directory / "log.tsv"
    if not path.is_file():
        return 0
    try:
        log = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        return int(log["active"].iloc[-1]) if len(log) else 0
    except (ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return -1


def recover_log(directory: str | Path) -> bool:
    """Append the log line of the last switch of the active version if it is missing; True if one was written.

    The switch was an enroll when the active version's base is the last logged one, else an undo of the last
    logged version.
    """
    directory = Path(directory)
    if not (directory / "active").is_file():
        return False
    active, logged = active_version(directory), _logged_active(directory)
    if active == logged or logged < 0:
        return False

    def info(version: int) -> dict:
        path = directory / f"v{version}" / "version.json"
        return json.loads(path.read_text()) if version and path.is_file() else {}

    now, latest = info(active), info(logged)
    if now and int(now.get("base", -1)) == logged:
        counts = {k: now.get(k, "") for k in ("known", "new", "rejected", "already")}
        action = "redo" if active in _logged_versions(directory, "enroll") else "enroll"
        _log(directory, action=action, version=active, active=active, decisions=now.get("decisions", ""),
             decisions_sha1=now.get("decisions_sha1", ""), time=now.get("time", _now()), **counts)  # fmt: skip
    else:
        _log(directory, action="undo", version=logged, active=active, decisions=latest.get("decisions", ""),
             decisions_sha1=latest.get("decisions_sha1", ""), time=_now())  # fmt: skip
    logger.warning("%s: the log lacked the line of the switch to version %d (a killed process); written now",
                   directory / "log.tsv", active)  # fmt: skip
    return True


def _read_log(directory: Path) -> pd.DataFrame:
    path = directory / "log.tsv"
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=object) for c in LOG_COLUMNS})
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False).reindex(columns=LOG_COLUMNS)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise EnrollmentError(
            f"{path}: not a readable log ({err}); to switch versions by hand, write the number of a v<N> folder "
            f"(0 = the original metadata.csv) into {directory / 'active'}"
        ) from None


def _logged_versions(directory: Path, action: str) -> set[int]:
    """The versions the log names with ``action``."""
    log = _read_log(directory)
    return {int(v) for v in log.loc[log["action"] == action, "version"] if str(v).isdigit()}


def _log(directory: Path, **entry) -> None:
    path = directory / "log.tsv"
    line = pd.DataFrame([{c: entry.get(c, "") for c in LOG_COLUMNS}])
    head = not path.is_file()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.to_csv(sep="\t", index=False, header=head))


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _original(data_root: Path, discovery: bool) -> pd.DataFrame:
    meta, _ = validate_dataset(data_root, check_files=False, with_solution=False, discovery=discovery)
    return meta.drop(columns=["abspath", "sha1"], errors="ignore")


def _effective(data_root: Path, changes_file: str | None, discovery: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    meta = _original(data_root, discovery)
    changes = read_changes(changes_file)
    effective, problems = apply_changes(meta, changes, str(changes_file), str(data_root / "metadata.csv"), discovery)
    if problems:
        raise DataValidationError(problems)
    return effective, changes


def _left_without_queries(gallery: pd.DataFrame, added: pd.DataFrame, file: str) -> list[Problem]:
    """A dataset whose every query photo this decision file enrolls: the workflow would have nothing to identify."""
    problems = []
    for dataset, part in added.groupby("dataset", sort=True):
        if not (gallery.loc[gallery["dataset"] == dataset, "split"] == "query").any():
            problems.append(
                Problem(
                    file,
                    None,
                    f"these decisions enroll every remaining query photo of dataset {dataset!r} ({len(part)} "
                    "enrolled now), leaving it nothing to identify; decide one of them reject (or remove its row), "
                    "or add new query photos to metadata.csv first",
                )
            )
    return problems


def enroll(
    data_root: str | Path,
    directory: str | Path,
    decisions_file: str | Path,
    prefix: str = "new_",
    discovery: bool = False,
) -> int:
    """Write the next gallery version from ``decisions_file`` and make it active; returns its number.

    ``discovery``: the discovery stage runs, so datasets without a gallery are valid (as at the workflow's start).
    Every check runs before anything is written; the new version is written into a scratch folder, renamed to
    ``v<N>`` when complete, and only then made active: any failure leaves the active version as it was.
    """
    data_root, directory = Path(data_root), Path(directory)
    recover_log(directory)
    active = active_version(directory)
    effective, enrolled = _effective(data_root, active_changes_file(directory), discovery)
    decisions = read_table(decisions_file)
    added, counts = plan_enrollment(effective, decisions, str(decisions_file), enrolled, prefix)
    if added.empty:
        raise EnrollmentError(f"{decisions_file}: nothing new to enroll ({counts}); version {active} stays active")
    sha = hash_file(decisions_file)
    again = _same_as_undone(directory, active, sha, added)
    if again:
        logger.info("%s: the decisions of version %d (undone since); making it active again, nothing new written",
                    decisions_file, again)  # fmt: skip
        return _reactivate(data_root, directory, again, active, discovery)
    version = max([0, *_versions(directory)]) + 1
    changes = pd.concat([enrolled, added.assign(version=str(version), decisions_sha1=sha)], ignore_index=True)
    original, meta_file = _original(data_root, discovery), str(data_root / "metadata.csv")
    gallery, problems = apply_changes(original, changes, str(decisions_file), meta_file, discovery)
    problems = _left_without_queries(gallery, added, str(decisions_file)) or problems
    if problems:
        raise DataValidationError(problems)
    folder, scratch = directory / f"v{version}", directory / f".v{version}.partial"
    shutil.rmtree(scratch, ignore_errors=True)  # left by a killed enroll: never active
    scratch.mkdir(parents=True)
    _csv(changes[CHANGE_COLUMNS], scratch / "changes.csv")
    _csv(gallery, scratch / "metadata.csv")
    shutil.copyfile(decisions_file, scratch / "decisions.csv")
    info = {
        "version": version,
        "base": active,
        "decisions": str(decisions_file),
        "decisions_sha1": sha,
        "time": _now(),
        "data_root": os.path.realpath(data_root),
        "metadata_sha1": metadata_fingerprint(data_root),
        **counts,
    }
    _write_text(scratch / "version.json", json.dumps(info, indent=2, sort_keys=True) + "\n")
    scratch.rename(folder)
    record_data(directory, data_root)
    _activate(
        directory,
        version,
        action="enroll",
        version=version,
        decisions=str(decisions_file),
        decisions_sha1=sha,
        time=info["time"],
        **counts,
    )
    logger.info(
        "version %d (base %d): %d photo(s) joined known individuals, %d new, %d rejected, %d already "
        "enrolled; active now",
        version,
        active,
        counts["known"],
        counts["new"],
        counts["rejected"],
        counts["already"],
    )
    return version


def _same_as_undone(directory: Path, active: int, sha: str, added: pd.DataFrame) -> int:
    """The version (0: none) that enrolled the same photos as ``added`` from a file with sha1 ``sha`` on the base
    version ``active``: enrolling its decisions again makes it active again instead of writing a copy."""
    keys = ["dataset", "image_id", "identity", "decision"]
    ours = sorted(map(tuple, added[keys].astype(str).to_numpy()))
    for version in sorted(_versions(directory), reverse=True):
        info = _read_json(directory / f"v{version}" / "version.json")
        if info.get("decisions_sha1") != sha or str(info.get("base")) != str(active):
            continue
        changes = read_changes(directory / f"v{version}" / "changes.csv")
        theirs = changes.loc[changes["version"] == str(version), keys].astype(str)
        if sorted(map(tuple, theirs.to_numpy())) == ours:
            return version
    return 0


def _reactivate(data_root: Path, directory: Path, version: int, active: int, discovery: bool) -> int:
    """Make the undone ``version`` (whose base is ``active``) active again, once it still fits the data."""
    _effective(data_root, str(directory / f"v{version}" / "changes.csv"), discovery)  # refuses what no longer fits
    info = _read_json(directory / f"v{version}" / "version.json")
    counts = {k: info.get(k, "") for k in ("known", "new", "rejected", "already")}
    _activate(directory, version, action="redo", version=version, decisions=info.get("decisions", ""),
              decisions_sha1=info.get("decisions_sha1", ""), time=_now(), **counts)  # fmt: skip
    logger.info("redid version %d: active again (base %d; snakemake enroll_undo goes back)", version, active)
    return version


def redo(data_root: str | Path, directory: str | Path, discovery: bool = False) -> int:
    """Make the version that the last undo back to the active version left active again; returns its number.

    Refused when there is nothing to redo (no undo led to the active version, or an enrollment came after it), or
    when that version no longer fits the data (the active version stays).
    """
    data_root, directory = Path(data_root), Path(directory)
    recover_log(directory)
    active = active_version(directory)
    log = _read_log(directory)
    undone = log.loc[(log["action"] == "undo") & (log["active"] == str(active)), "version"]
    version = int(undone.iloc[-1]) if len(undone) and str(undone.iloc[-1]).isdigit() else 0
    info = _read_json(directory / f"v{version}" / "version.json") if version else {}
    if not version or str(info.get("base")) != str(active):
        raise EnrollmentError(
            f"{directory}: nothing to redo (no undo led to the active version {active}); to enroll, "
            "snakemake enroll --config decisions=FILE"
        )
    return _reactivate(data_root, directory, version, active, discovery)


def undo(directory: str | Path) -> int:
    """Make the active version's base version active again (no file is deleted); returns the active number."""
    directory = Path(directory)
    recover_log(directory)
    active = active_version(directory)
    if active == 0:
        raise EnrollmentError(f"{directory}: nothing to undo, the original metadata.csv is active")
    path = directory / f"v{active}" / "version.json"
    try:
        info = json.loads(path.read_text())
        base = int(info["base"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EnrollmentError(
            f"{path}: cannot read the base version of the active version {active} ({err}); write the number of "
            f"the version to go back to (0 = the original metadata.csv) into {directory / 'active'}"
        ) from None
    if base and not (directory / f"v{base}" / "changes.csv").is_file():
        raise EnrollmentError(
            f"{path}: base version {base} has no {directory / f'v{base}' / 'changes.csv'}; write the number of "
            f"an existing v<N> folder (0 = the original metadata.csv) into {directory / 'active'}"
        )
    _activate(
        directory,
        base,
        action="undo",
        version=active,
        decisions=info.get("decisions", ""),
        decisions_sha1=info.get("decisions_sha1", ""),
        time=_now(),
    )
    logger.info("undid version %d: version %d is active (v%d stays on disk)", active, base, active)
    return base


def describe_active(directory: str | Path) -> dict:
    """The active gallery version: ``gallery_version`` (0 = the original metadata.csv), its folder, the number of
    enrolled photos and when it was enrolled (written to ``results/gallery_version.json``, shown at each start
    and on the review pages)."""
    directory = Path(directory)
    version = active_version(directory)
    info = _read_json(directory / f"v{version}" / "version.json") if version else {}
    enrolled = len(read_changes(active_changes_file(directory))) if version else 0
    return {
        "gallery_version": version,
        "enrollment_dir": str(directory),
        "enrolled_photos": enrolled,
        "enrolled_at": info.get("time", ""),
        "decisions": info.get("decisions", ""),
    }


def describe_line(described: dict, where: bool = True) -> str:
    """One line for people: which gallery the run reads (``where``: with the enrollment folder, which follows the
    data's path; without it the line names the version alone, so a moved data folder reruns no job that shows it)."""
    if not described["gallery_version"]:
        folder = f" (enrollments: {described['enrollment_dir']})" if where else ""
        return f"Gallery version 0: the original metadata.csv{folder}"
    return (
        f"Gallery version {described['gallery_version']}{' of ' + str(described['enrollment_dir']) if where else ''}: "
        f"{described['enrolled_photos']} photo(s) enrolled (last {described['enrolled_at']} from "
        f"{described['decisions']}); snakemake enroll_undo goes back one version"
    )


def write_description(data_root: str | Path, directory: str | Path, out: str | Path) -> dict:
    """``results/gallery_version.json``: :func:`describe_active` with the data's real path."""
    info = {**describe_active(directory), "data_root": os.path.realpath(str(data_root))}
    _write_text(Path(out), json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def _run(args: argparse.Namespace) -> None:
    try:
        if args.command == "describe":
            logger.info("%s", describe_line(write_description(args.data_root, args.dir, args.out)))
        elif args.command == "enroll":
            enroll(args.data_root, args.dir, args.decisions, args.new_name_prefix, args.discovery)
        elif args.command == "redo":
            redo(args.data_root, args.dir, args.discovery)
        else:
            undo(args.dir)
    except (DataValidationError, EnrollmentError) as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


def main(argv: list[str] | None = None) -> None:
    commands = {
        "enroll": command("the next gallery version from a decisions CSV", arg("--decisions", required=True),
                          arg("--new-name-prefix", default="new_")),
        "undo": command("go back to the previous gallery version"),
        "redo": command("make the version the last undo left active again"),
        "describe": command("write the active gallery version as JSON", "out"),
    }  # fmt: skip
    parser = stage_parser(__doc__, arg("--data-root", required=True),
                          arg("--dir", required=True, help="the data's enrollment folder (enrollment_dir)"),
                          arg("--discovery", action="store_true", help="discovery runs: accept datasets without a "
                              "gallery"), "log",
                          commands=commands)  # fmt: skip
    run_stage(parser, argv, _run)


if __name__ == "__main__":
    main()
