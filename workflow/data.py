"""Data layer: read and validate a dataset in the AnimalCLEF 2025 layout.

Inputs
    ``<root>/metadata.csv`` with columns ``image_id, identity, path, date, orientation, species, split,
    dataset`` (``identity`` empty on query rows; ``date`` and ``orientation`` may be empty) and the images
    it names (paths relative to ``<root>``); optionally ``<root>/solution.csv`` with ``image_id, identity,
    dataset, new`` for the query rows.
Outputs (rule ``validate_data``)
    ``results/data/<dataset>.tsv`` per dataset: the metadata rows plus ``abspath`` and ``sha1`` (content
    hash of the image file, the key of every per-image cache).

Validation collects *every* problem before failing, each naming the file, the row and the problem.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workflow._entry import setup_logging, write_tsv
from workflow.images import verify_image

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
SOLUTION_COLUMNS = ["image_id", "identity", "dataset", "new"]
SPLITS = ("database", "query")


@dataclass(frozen=True)
class Problem:
    """One validation problem: the file, the 1-based line in that file (header = line 1) and what is wrong."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class DataValidationError(ValueError):
    """Raised with the full list of problems found in a dataset."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in the input data:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in problems)]))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV with every column as string and empty cells as ``""``."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])


def _line(index: int) -> int:
    return int(index) + 2  # header is line 1


def check_columns(df: pd.DataFrame, required: list[str], file: str) -> list[Problem]:
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return []
    return [Problem(file, 1, f"missing column(s) {missing}; found {list(df.columns)}")]


def check_metadata_rows(df: pd.DataFrame, file: str) -> list[Problem]:
    """Row-level checks of a metadata table that already has all required columns."""
    problems: list[Problem] = []
    for col in ("image_id", "path", "split", "dataset"):
        for idx in df.index[df[col].str.strip() == ""]:
            problems.append(Problem(file, _line(idx), f"empty {col!r}"))
    dup = df["image_id"].duplicated(keep=False) & (df["image_id"] != "")
    for image_id, rows in df[dup].groupby("image_id", sort=True).groups.items():
        lines = ", ".join(str(_line(i)) for i in rows)
        problems.append(Problem(file, _line(rows[0]), f"duplicate image_id {image_id!r} on lines {lines}"))
    bad_split = ~df["split"].isin(SPLITS) & (df["split"] != "")
    for idx in df.index[bad_split]:
        problems.append(
            Problem(file, _line(idx), f"unknown split {df.at[idx, 'split']!r}; expected one of {list(SPLITS)}")
        )
    no_identity = (df["split"] == "database") & (df["identity"].str.strip() == "")
    for idx in df.index[no_identity]:
        problems.append(Problem(file, _line(idx), "database image without an identity"))
    for dataset, part in df[df["dataset"] != ""].groupby("dataset", sort=True):
        if not (part["split"] == "database").any():
            problems.append(Problem(file, None, f"dataset {dataset!r} has no database images"))
    return problems


def hash_file(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_image(path: Path) -> tuple[str | None, str]:
    if not path.is_file():
        return "image file does not exist", ""
    error = verify_image(path)
    if error is not None:
        return error.split(": ", 1)[-1], ""
    return None, hash_file(path)


def check_images(df: pd.DataFrame, root: Path, file: str, threads: int = 2) -> tuple[list[Problem], list[str]]:
    """Decode every image; return the problems and the sha1 of each row's file (``""`` if unreadable)."""
    paths = [root / p for p in df["path"]]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(_check_image, paths))
    problems = [
        Problem(file, _line(idx), f"image {df.at[idx, 'path']!r}: {err}")
        for idx, (err, _) in zip(df.index, results)
        if err is not None
    ]
    return problems, [sha for _, sha in results]


def check_solution(solution: pd.DataFrame, metadata: pd.DataFrame, file: str) -> list[Problem]:
    """The solution must list every query image exactly once with a boolean ``new``."""
    problems = check_columns(solution, SOLUTION_COLUMNS, file)
    if problems:
        return problems
    dup = solution["image_id"][solution["image_id"].duplicated()]
    for idx in dup.index:
        problems.append(Problem(file, _line(idx), f"duplicate image_id {solution.at[idx, 'image_id']!r}"))
    bad_new = ~solution["new"].str.lower().isin(["true", "false", "1", "0"])
    for idx in solution.index[bad_new]:
        problems.append(Problem(file, _line(idx), f"'new' must be True or False, got {solution.at[idx, 'new']!r}"))
    queries = set(metadata.loc[metadata["split"] == "query", "image_id"])
    listed = set(solution["image_id"])
    for image_id in sorted(queries - listed)[:20]:
        problems.append(Problem(file, None, f"query image {image_id!r} of metadata.csv is not in the solution"))
    for idx in solution.index[~solution["image_id"].isin(queries)][:20]:
        problems.append(Problem(file, _line(idx), f"{solution.at[idx, 'image_id']!r} is not a query image"))
    return problems


def validate_dataset(
    root: str | Path,
    extra_columns: list[str] | None = None,
    check_files: bool = True,
    threads: int = 2,
    with_solution: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Validate ``root`` and return (metadata with ``abspath``/``sha1``, solution or None).

    ``with_solution=False`` leaves ``solution.csv`` unread (the workflow checks it in its own job).

    Raises :class:`DataValidationError` listing every problem found.
    """
    root = Path(root)
    meta_file = root / "metadata.csv"
    if not meta_file.is_file():
        raise DataValidationError([Problem(str(meta_file), None, "file does not exist")])
    try:
        df = read_table(meta_file)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataValidationError([Problem(str(meta_file), None, f"cannot parse CSV ({err})")]) from err
    required = METADATA_COLUMNS + [c for c in (extra_columns or []) if c not in METADATA_COLUMNS]
    problems = check_columns(df, required, str(meta_file))
    if problems:
        raise DataValidationError(problems)
    problems = check_metadata_rows(df, str(meta_file))
    shas = [""] * len(df)
    if check_files:
        image_problems, shas = check_images(df, root, str(meta_file), threads)
        problems += image_problems
    solution = None
    sol_file = root / "solution.csv"
    if with_solution and sol_file.is_file():
        solution = read_table(sol_file)
        problems += check_solution(solution, df, str(sol_file))
    if problems:
        raise DataValidationError(problems)
    df = df.assign(abspath=[str((root / p).resolve()) for p in df["path"]], sha1=shas)
    return df, solution


def write_per_dataset(df: pd.DataFrame, out_dir: str | Path, datasets: list[str]) -> None:
    """Write ``<out_dir>/<dataset>.tsv`` for each expected dataset; fail if one is absent from the data."""
    found = sorted(df["dataset"].unique())
    absent = [d for d in datasets if d not in found]
    if absent:
        raise DataValidationError(
            [Problem("metadata.csv", None, f"dataset(s) {absent} expected by the workflow are absent; found {found}")]
        )
    for dataset in datasets:
        write_tsv(df[df["dataset"] == dataset].reset_index(drop=True), Path(out_dir) / f"{dataset}.tsv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset folder with metadata.csv")
    parser.add_argument("--out-dir", required=True, help="where <dataset>.tsv files go")
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--extra-columns", nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    logger.info("validating %s", args.root)
    try:
        df, solution = validate_dataset(args.root, args.extra_columns, threads=args.threads)
        write_per_dataset(df, args.out_dir, args.datasets)
    except DataValidationError as err:
        logger.error("%s", err)
        raise SystemExit(1) from None
    counts = df.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    logger.info("valid: %d images\n%s", len(df), counts.to_string())
    logger.info("solution.csv: %s", "present" if solution is not None else "absent (stages are not scored)")


if __name__ == "__main__":
    main()
