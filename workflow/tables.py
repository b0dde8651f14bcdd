"""Content-stable per-dataset tables: the workflow's view of the input data, and the solution check.

Inputs
    ``<root>/metadata.csv`` and the images it names; ``<root>/solution.csv`` (``solution`` command only).
Outputs
    ``<out_dir>/<dataset>.tsv`` per dataset: the metadata rows in ``image_id`` order, only the columns jobs read
    (:data:`TABLE_COLUMNS`), with ``abspath`` (the image's path as jobs open it: absolute where ``data_root``
    is) and ``sha1`` (content hash of the image file, the key of every per-image cache). A table is rewritten
    only when its content changes, so its modification time (what Snakemake compares) moves exactly when the
    data of its dataset changes: a replaced or truncated image changes its ``sha1`` and reruns that dataset's
    dependants; a metadata edit that changes nothing jobs read (a fixed typo, sorted rows, an added column, an
    edited ``species``) reruns nothing.
    ``.snakemake/image-stats/<dataset>.tsv``: the stat cache (``path, size, mtime_ns, ctime_ns, inode, sha1``) of
    every image of the dataset that hashed and decoded, so that a later start reads only the images whose
    file changed (a file rewritten in place changes its ``ctime_ns`` even if its size and mtime are kept).
    ``solution`` command: a small JSON summary of ``solution.csv`` once it is valid against the tables.

``sync_tables`` runs when the workflow starts (rules/start.smk), so bad metadata or a corrupt image
stops the run before any job starts, and nothing already computed is deleted or rewritten.

    python -m workflow.tables write --root R --out-dir D --datasets A B [--extra-columns C] [--threads N] [--discovery]
    python -m workflow.tables solution --root R --tables D/A.tsv D/B.tsv --out S.json
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
from pathlib import Path

import pandas as pd

from workflow.cli import arg, command, run_stage, stage_parser
from workflow.data import (
    VALIDATE_ARGS,
    DataValidationError,
    Problem,
    check_images,
    check_solution,
    check_solution_format,
    data_warnings,
    physical_lines,
    read_table,
    resolved,
    validate_dataset,
)
from workflow.enrollment import ENROLLED, apply_changes, read_changes
from workflow.stage_io import atomic_path, read_tsv

logger = logging.getLogger(__name__)

STATS_DIR = Path(".snakemake") / "image-stats"
# The columns of a table: only those jobs read, so that a column added to metadata.csv (or an edited ``species``,
# ``date`` or ``path`` of the same file) rewrites no table and reruns nothing. ``enrolled`` follows where a gallery
# version enrolled photos of the dataset (workflow/enrollment.py).
TABLE_COLUMNS = ["image_id", "identity", "split", "dataset", "orientation", "abspath", "sha1"]
STAT_COLUMNS = ["path", "size", "mtime_ns", "ctime_ns", "inode", "sha1"]


def _stat_row(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def read_stat_cache(path: Path) -> dict[str, tuple[tuple[int, int, int, int], str]]:
    """``{abspath: ((size, mtime_ns, ctime_ns, inode), sha1)}``; empty if absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        return {
            row.path: ((int(row.size), int(row.mtime_ns), int(row.ctime_ns), int(row.inode)), row.sha1)
            for row in df.itertuples(index=False)
        }
    except (ValueError, AttributeError, pd.errors.ParserError):
        logger.warning("ignoring unreadable stat cache %s", path)
        return {}


def write_stat_cache(path: Path, cache: dict[str, tuple[tuple[int, int, int, int], str]]) -> None:
    rows = [(p, *stat, sha) for p, (stat, sha) in sorted(cache.items())]
    write_if_changed(pd.DataFrame(rows, columns=STAT_COLUMNS), path)


def hash_and_check(
    df: pd.DataFrame,
    root: Path,
    file: str,
    cache_path: Path,
    threads: int = 2,
    allow_external_symlinks: bool = False,
) -> tuple[list[Problem], list[str]]:
    """The ``sha1`` of every row's image; only images whose file changed since the last call are read.

    A changed (or never seen) image is hashed and fully decoded; the problems name ``file`` and the row.
    """
    cache = read_stat_cache(cache_path)
    paths = [str(resolved(root / p) or os.path.abspath(root / p)) for p in df["path"]]
    stats = [_stat_row(Path(p)) for p in paths]
    shas = [""] * len(df)
    todo = []
    for i, (path, stat) in enumerate(zip(paths, stats)):
        hit = cache.get(path)
        if stat is not None and hit is not None and hit[0] == stat:
            shas[i] = hit[1]
        else:
            todo.append(i)
    problems: list[Problem] = []
    if todo:
        logger.info("reading %d new or changed image(s) of %s", len(todo), file)
        problems, found = check_images(df.iloc[todo], root, file, threads, allow_external_symlinks)
        for i, sha in zip(todo, found):
            shas[i] = sha
            if sha and stats[i] is not None:
                cache[paths[i]] = (stats[i], sha)
        write_stat_cache(cache_path, cache)
    return problems, shas


def table_bytes(df: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    df.to_csv(buffer, sep="\t", index=False)
    return buffer.getvalue().encode()


def write_if_changed(df: pd.DataFrame, path: str | Path) -> bool:
    """Write ``df`` as TSV to ``path`` unless the file already holds exactly that; True if written."""
    path = Path(path)
    data = table_bytes(df)
    if path.is_file() and path.read_bytes() == data:
        return False
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return True


def build_tables(
    root: str | Path,
    datasets: list[str],
    extra_columns: list[str] | None = None,
    threads: int = 2,
    stats_dir: str | Path = STATS_DIR,
    allow_external_symlinks: bool = False,
    enrollment: str | Path | None = None,
    discovery: bool = False,
    warn=None,
) -> dict[str, pd.DataFrame]:
    """Validate the metadata and the images it names; return the table of each of ``datasets``.

    ``enrollment``: the active gallery version's ``changes.csv`` (:mod:`workflow.enrollment`), applied to the
    metadata (enrolled query photos become gallery photos of their identity). ``discovery``: the discovery stage
    runs, so a dataset without a gallery (only query rows) is valid. Raises :class:`DataValidationError` listing
    every problem (the solution is not read here).
    """
    root = Path(root)
    meta_file = str(root / "metadata.csv")
    df, _ = validate_dataset(root, extra_columns, check_files=False, with_solution=False, discovery=discovery)
    for line in data_warnings(df, meta_file) if warn is not None else []:
        warn(str(line))
    if enrollment:
        df, problems = apply_changes(df, read_changes(enrollment), str(enrollment), meta_file, discovery)
        if problems:
            raise DataValidationError(problems)
    # the path as jobs open it (they run in the working directory): a copy of the working directory with its
    # relative data_root (the demo) keeps its tables, and so its results
    df = df.assign(abspath=[os.path.normpath(root / p) for p in df["path"]])
    found = sorted(df["dataset"].unique())
    absent = [d for d in datasets if d not in found]
    problems = []
    if absent:
        problems.append(
            Problem(meta_file, None, f"dataset(s) {absent} expected by the workflow are absent; found {found}")
        )
    tables = {}
    for dataset in datasets:
        rows = df[df["dataset"] == dataset]
        found_problems, shas = hash_and_check(
            rows, root, meta_file, Path(stats_dir) / f"{dataset}.tsv", threads, allow_external_symlinks
        )
        problems += found_problems
        if ENROLLED in rows and (rows[ENROLLED] == "").all():
            rows = rows.drop(columns=ENROLLED)  # a dataset without enrolled photos keeps its table byte for byte
        columns = TABLE_COLUMNS + [ENROLLED] * (ENROLLED in rows)
        # rows in image_id order: sorting metadata.csv changes no table
        tables[dataset] = rows.assign(sha1=shas)[columns].sort_values("image_id", kind="stable").reset_index(drop=True)
    if problems:
        raise DataValidationError(problems)
    return tables


def sync_tables(
    root: str | Path,
    out_dir: str | Path,
    datasets: list[str],
    extra_columns: list[str] | None = None,
    threads: int = 2,
    stats_dir: str | Path = STATS_DIR,
    allow_external_symlinks: bool = False,
    enrollment: str | Path | None = None,
    discovery: bool = False,
    warn=None,
) -> list[str]:
    """Bring ``<out_dir>/<dataset>.tsv`` up to date with the data; return the datasets whose table changed.

    ``warn`` receives each data warning (:func:`workflow.data.data_warnings`). A ``solution.csv`` whose own format
    is wrong (columns, duplicates, ``new`` not boolean) fails here too, before any job.
    """
    tables = build_tables(root, datasets, extra_columns, threads, stats_dir, allow_external_symlinks, enrollment,
                          discovery, warn)  # fmt: skip
    sol_file = Path(root) / "solution.csv"
    if sol_file.is_file():
        solution = read_table(sol_file)
        problems = physical_lines(check_solution_format(solution, str(sol_file)), str(sol_file), solution)
        if problems:
            raise DataValidationError(problems)
    return [d for d, table in tables.items() if write_if_changed(table, Path(out_dir) / f"{d}.tsv")]


def check_solution_file(root: str | Path, tables: list[str | Path]) -> dict:
    """Validate ``<root>/solution.csv`` against the query rows of the tables; return a summary.

    Photos enrolled into the gallery (a non-empty ``enrolled`` column of a table, :mod:`workflow.enrollment`) are
    no longer queries: their solution rows are left out.
    """
    sol_file = Path(root) / "solution.csv"
    if not sol_file.is_file():
        raise DataValidationError([Problem(str(sol_file), None, "file does not exist")])
    solution = read_table(sol_file)
    raw = pd.concat([read_tsv(t) for t in tables], ignore_index=True)
    if ENROLLED in raw:
        enrolled = raw.loc[pd.to_numeric(raw[ENROLLED], errors="coerce").notna(), "image_id"].astype(str)
        solution = solution[~solution["image_id"].isin(enrolled)].reset_index(drop=True)
    meta = raw.astype(str)
    problems = physical_lines(check_solution(solution, meta, str(sol_file)), str(sol_file), solution)
    if problems:
        raise DataValidationError(problems)
    new = solution["new"].str.lower().isin(["true", "1"])
    return {"queries": int(len(solution)), "new": int(new.sum()), "known": int((~new).sum())}


def write(args: argparse.Namespace) -> None:
    """Validate the data and bring the per-dataset tables up to date (content-stable)."""
    logger.info("validating %s", args.root)
    changed = sync_tables(
        args.root,
        args.out_dir,
        args.datasets,
        args.extra_columns,
        args.threads,
        allow_external_symlinks=args.allow_external_symlinks,
        enrollment=args.enrollment or None,
        discovery=args.discovery,
    )
    logger.info("tables written: %s (unchanged: the others)", changed or "none")


def solution(args: argparse.Namespace) -> None:
    """Validate solution.csv against the tables and write its summary."""
    summary = check_solution_file(args.root, args.tables)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    logger.info("solution.csv is valid: %s", summary)


def main(argv: list[str] | None = None) -> None:
    commands = {
        "write": command("validate the data and write the per-dataset tables (content-stable)", *VALIDATE_ARGS,
                         arg("--enrollment", default="", help="changes.csv of the active gallery (or empty)")),
        "solution": command("validate solution.csv against the tables", arg("--root", required=True),
                            arg("--tables", nargs="+", required=True), "out"),
    }  # fmt: skip
    try:
        run_stage(stage_parser(__doc__, "log", commands=commands), argv, {"write": write, "solution": solution})
    except DataValidationError as err:
        logger.error("%s", err)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
