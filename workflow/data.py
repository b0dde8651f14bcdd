"""Data layer: read and validate a dataset in the AnimalCLEF 2025 layout.

Inputs
    ``<root>/metadata.csv`` with columns ``image_id, identity, path, date, orientation, species, split,
    dataset`` (``identity`` empty on query rows; ``date`` and ``orientation`` may be empty) and the images
    it names (paths relative to ``<root>``); optionally ``<root>/solution.csv`` with ``image_id, identity,
    dataset, new`` for the query rows.
Outputs
    :func:`validate_dataset` returns the metadata rows plus ``abspath`` and ``sha1`` (content hash of the image
    file, the key of every per-image cache); :mod:`workflow.tables` writes them as ``results/data/<dataset>.tsv``
    at every start.

Validation collects *every* problem before failing, each naming the file, the row and the fix. It checks:
both CSV files are UTF-8 CSV; the columns; no empty ``image_id``/``path``/``split``/``dataset``; unique
``image_id``; ``split`` is database or query; database rows have an identity; no identity is
``new_individual`` and no id holds a control character; dataset names match :data:`SAFE_NAME` (at most
:data:`SAFE_NAME_MAX` characters) and are not reserved (``ALL``, ``default``, any case); every dataset has
database and query rows (query rows alone: valid only when the discovery stage runs, which clusters them from
scratch); every ``path`` is relative and stays inside ``<root>`` (also through symbolic links, unless allowed);
every image decodes; the solution lists each query once with a boolean ``new``.
:func:`read_dataset_names` is the cheap subset that the Snakefile runs when it is parsed (so that an unsafe
dataset name stops the workflow before any job starts); :func:`validate_dataset` runs it again with all the
other checks in the ``validate_data`` job.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workflow import NEW_INDIVIDUAL
from workflow.cli import arg
from workflow.images import verify_image

logger = logging.getLogger(__name__)

METADATA_COLUMNS = ["image_id", "identity", "path", "date", "orientation", "species", "split", "dataset"]
SOLUTION_COLUMNS = ["image_id", "identity", "dataset", "new"]
SPLITS = ("database", "query")
# A dataset name becomes a folder and file name (results/data/<dataset>.tsv) and a shell argument.
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
SAFE_NAME_MAX = 64
# Dataset names that mean something else to the workflow (compared in lower case), with what they mean.
RESERVED_DATASETS = {
    "all": "the ALL row of scores.tsv is the mean over the datasets",
    "default": "'default' is the fallback key of every per-dataset config map",
}
# Labels with a meaning of their own in predictions and submissions; no identity may be called so.
RESERVED_IDENTITIES = (NEW_INDIVIDUAL,)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Problem:
    """One validation problem: the file, the 1-based line in that file (header = line 1) and what is wrong."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


MAX_LISTED = 50
"""Problems listed in a :class:`DataValidationError` message (all are kept in ``.problems``)."""


class DataValidationError(ValueError):
    """Raised with the full list of problems found in a dataset; the message lists the first :data:`MAX_LISTED`."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        head = f"{len(problems)} problem(s) in the input data:"
        lines = [f"  - {p}" for p in problems[:MAX_LISTED]]
        if len(problems) > MAX_LISTED:
            lines.append(f"  ... and {len(problems) - MAX_LISTED} more (fix these and start again to see the rest)")
        super().__init__("\n".join([head, *lines]))


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV with every column as string and empty cells as ``""``.

    The file must be UTF-8 (a byte-order mark is accepted); otherwise, or when it is not valid CSV,
    :class:`DataValidationError` names the file, the line and the fix.
    """
    path = Path(path)
    raw = path.read_bytes()
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        start = bom + err.start
        line = raw[:start].count(b"\n") + 1
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        raise DataValidationError([Problem(str(path), line, (
            f"not UTF-8 text: byte 0x{raw[start]:02X} at column {column} (byte offset {start}) cannot be decoded; "
            "re-save the file as UTF-8 (e.g. 'Save as CSV UTF-8' in a spreadsheet, or "
            f"iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.csv)"))]) from None  # fmt: skip
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[])
        if "\"" in text:  # a quoted field may hold a line break: record the line each row starts on
            df.attrs["lines"] = _record_lines(text)
        return df
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        match = re.search(r"line (\d+)", str(err))
        raise DataValidationError([Problem(str(path), int(match.group(1)) if match else None,
                                           f"not a valid CSV table ({err}); fix that line (e.g. a "
                                           "field with a comma must be in double quotes)")]) from None  # fmt: skip


def _line(index: int) -> int:
    return int(index) + 2  # header is line 1 (see :func:`physical_lines` for rows after a multi-line field)


def _record_lines(text: str) -> list[int]:
    """The line each record of a CSV text starts on, blank lines skipped (as pandas does); the header first."""
    starts, end = [], 0
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        if row:
            starts.append(end + 1)
        end = reader.line_num
    return starts


def physical_lines(problems: list[Problem], file: str, df: pd.DataFrame) -> list[Problem]:
    """``problems`` of ``file`` with each row's line (:func:`_line`) replaced by the line the row starts on in
    the file, which differs after a quoted field that holds a line break."""
    starts = df.attrs.get("lines")
    if not starts:
        return problems
    out = []
    for p in problems:
        if p.file == file and p.line is not None and 2 <= p.line < len(starts) + 1:
            p = Problem(p.file, starts[p.line - 1], p.message)
        out.append(p)
    return out


def check_columns(df: pd.DataFrame, required: list[str], file: str) -> list[Problem]:
    missing = [c for c in required if c not in df.columns]
    if not missing:
        return []
    return [Problem(file, 1, f"missing column(s) {missing}; found {list(df.columns)}")]


def check_metadata_rows(df: pd.DataFrame, file: str, discovery: bool = False) -> list[Problem]:
    """Row-level checks of a metadata table that already has all required columns.

    ``discovery``: the discovery stage runs, so a dataset without a gallery is valid (see
    :func:`check_split_coverage`).
    """
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
    problems += check_ids(df, file)
    problems += check_dataset_names(df, file)
    problems += check_paths(df, file)
    problems += check_split_coverage(df, file, discovery=discovery)
    return problems


def dataset_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a dataset name (it becomes a folder, a file name and a shell argument), or None."""
    if len(name) > SAFE_NAME_MAX:
        return f"is {len(name)} characters long (at most {SAFE_NAME_MAX})"
    if not re.fullmatch(SAFE_NAME, name):
        return ("is not a safe folder name: use only letters, digits, '.', '_' and '-', starting with a letter "
                "or digit")  # fmt: skip
    if name.lower() in RESERVED_DATASETS:
        return (f"is reserved ({RESERVED_DATASETS[name.lower()]}; any case)")
    return None


def suggest_name(name: str) -> str:
    """A safe rename of ``name`` (unsafe characters become ``_``; a reserved name gets ``_data``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[: SAFE_NAME_MAX - 5]
    return f"{safe}_data" if safe.lower() in RESERVED_DATASETS else safe or "dataset1"


def _first_lines(index) -> str:
    lines = [_line(i) for i in index]
    more = f" and {len(lines) - 1} more row(s)" if len(lines) > 1 else ""
    return f"{lines[0]}{more}"


def check_dataset_names(df: pd.DataFrame, file: str) -> list[Problem]:
    """Every non-empty ``dataset`` value must match :data:`SAFE_NAME` (one problem per distinct bad name)."""
    problems = []
    names = df["dataset"]
    for name, rows in df[names != ""].groupby("dataset", sort=True).groups.items():
        why = dataset_name_problem(str(name))
        if why:
            problems.append(Problem(file, _line(rows[0]), (
                f"dataset name {name!r} {why}; rename it in every row of metadata.csv (line(s) "
                f"{_first_lines(rows)}) and solution.csv, e.g. to {suggest_name(str(name))!r}")))  # fmt: skip
    return problems


def check_ids(df: pd.DataFrame, file: str) -> list[Problem]:
    """No control characters in ``image_id``/``identity``; no identity named like a reserved label."""
    problems = []
    for col in ("image_id", "identity"):
        for idx in df.index[df[col].map(lambda v: bool(_CONTROL.search(v)))]:
            problems.append(Problem(file, _line(idx), (
                f"{col} {df.at[idx, col]!r} contains a control character (tab, newline, ...); remove it")))  # fmt: skip
    for reserved in RESERVED_IDENTITIES:
        rows = df.index[df["identity"] == reserved]
        if len(rows):
            problems.append(Problem(file, _line(rows[0]), (
                f"identity {reserved!r} (line(s) {_first_lines(rows)}) is the label the workflow predicts for an "
                f"individual it has not seen; rename that individual, e.g. to {reserved + '_1'!r}")))  # fmt: skip
    return problems


def path_problem(path: str) -> str | None:
    """Why a ``path`` value may not be used (it must stay inside the data root), or None."""
    if os.path.isabs(path) or re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("\\"):
        return "is an absolute path; give the path relative to the folder of metadata.csv"
    depth = 0
    for part in re.split(r"[\\/]", path):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            return ("leaves the data folder ('..'); put the image inside the folder of metadata.csv and give "
                    "its path relative to that folder")  # fmt: skip
    return None


def check_paths(df: pd.DataFrame, file: str) -> list[Problem]:
    """Every non-empty ``path`` is relative and stays inside the data root (lexically; see :func:`check_images`)."""
    problems = []
    for idx in df.index[df["path"] != ""]:
        why = path_problem(df.at[idx, "path"])
        if why:
            problems.append(Problem(file, _line(idx), f"image path {df.at[idx, 'path']!r} {why}"))
    return problems


def check_split_coverage(
    df: pd.DataFrame, file: str, need: tuple[str, ...] = SPLITS, discovery: bool = False
) -> list[Problem]:
    """Each dataset needs rows of every split in ``need`` (database: the gallery; query: the images to identify).

    One place for this rule, so that a stage that accepts a gallery-only or query-only dataset can relax it.
    With ``discovery`` (the discovery stage is in ``stages``), a dataset whose rows are all queries is valid: it
    is logged as clustered from scratch. Without it, the problem says to enable discovery.
    """
    problems = []
    for dataset, part in df[df["dataset"] != ""].groupby("dataset", sort=True):
        query_only = not (part["split"] == "database").any() and (part["split"] == "query").any()
        for split in need:
            if (part["split"] == split).any():
                continue
            if split == "database" and query_only and discovery:
                logger.info("dataset %r has no gallery (%d query images, no database rows): the stages that need "
                            "identities skip it and discovery clusters its query images from scratch",
                            dataset, len(part))  # fmt: skip
                continue
            what = "database images (labelled gallery)" if split == "database" else "query images"
            first = _line(part.index[0])
            fix = f"add rows with split={split} for it, or remove its {len(part)} row(s) (first on line {first})"
            if split == "database" and query_only:
                fix += ("; or, to group its query images into individuals without a gallery (AnimalCLEF 2026), "
                        "enable discovery: add discovery to stages in the config")  # fmt: skip
            problems.append(Problem(file, _line(part.index[0]), f"dataset {dataset!r} has no {what}; {fix}"))
    return problems


def gallery_free_datasets(df: pd.DataFrame) -> list[str]:
    """Sorted names of the datasets whose rows are all queries (no gallery: discovery only)."""
    named = df[df["dataset"] != ""]
    has_gallery = set(named.loc[named["split"] == "database", "dataset"])
    return sorted(set(named["dataset"]) - has_gallery)


def hash_file(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolved(path: str | Path) -> Path | None:
    """``path`` with every symbolic link followed; None for a link loop (or a chain too long to follow)."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):
        return None


SYMLINK_LOOP = "is a symbolic link loop; replace the link by the image file (or a link to it)"


def _check_image(path: Path, root: Path | None = None) -> tuple[str | None, str]:
    """(problem or None, sha1) of one image; with ``root``, a file that resolves outside it (symlink) is refused."""
    if resolved(path) is None:
        return SYMLINK_LOOP, ""
    if root is not None and not path.resolve().is_relative_to(root):
        return (f"resolves to {path.resolve()}, outside the data folder {root} (a symbolic link); copy the "
                "image into the data folder, or set data.allow_external_symlinks: true"), ""  # fmt: skip
    if not path.is_file():
        return "image file does not exist", ""
    error = verify_image(path)
    if error is not None:
        return error.split(": ", 1)[-1], ""
    return None, hash_file(path)


def check_images(
    df: pd.DataFrame, root: Path, file: str, threads: int = 2, allow_external_symlinks: bool = False
) -> tuple[list[Problem], list[str]]:
    """Decode every image; return the problems and the sha1 of each row's file (``""`` if unreadable).

    Rows whose path is refused by :func:`path_problem` are not opened (:func:`check_paths` reports them); an
    image that resolves outside ``root`` through a symbolic link is refused unless ``allow_external_symlinks``.
    """
    inside = None if allow_external_symlinks else Path(root).resolve()
    safe = [path_problem(p) is None for p in df["path"]]

    def one(item: tuple[str, bool]) -> tuple[str | None, str]:
        rel, ok = item
        return _check_image(Path(root) / rel, inside) if ok else (None, "")

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(one, zip(df["path"], safe)))
    problems = [
        Problem(file, _line(idx), f"image {df.at[idx, 'path']!r}: {err}")
        for idx, (err, _) in zip(df.index, results)
        if err is not None
    ]
    return problems, [sha for _, sha in results]


def data_warnings(df: pd.DataFrame, file: str) -> list[Problem]:
    """What is valid but probably not meant: identities with leading/trailing spaces (a separate individual from
    the one without), identities on query rows (ignored: a query's identity is what the workflow predicts)."""
    warnings = []
    spaced = df.index[(df["identity"] != df["identity"].str.strip()) & (df["identity"].str.strip() != "")]
    if len(spaced):
        names = sorted(set(df.loc[spaced, "identity"]))
        warnings.append(Problem(file, _line(spaced[0]), (
            f"identity {names[0]!r} has leading or trailing spaces (line(s) {_first_lines(spaced)}; "
            f"{len(names)} such identit{'y' if len(names) == 1 else 'ies'}): it is an individual apart from "
            f"{names[0].strip()!r}; remove the spaces if they are the same animal")))  # fmt: skip
    labelled = df.index[(df["split"] == "query") & (df["identity"].str.strip() != "")]
    if len(labelled):
        warnings.append(Problem(file, _line(labelled[0]), (
            f"query row(s) with an identity (line(s) {_first_lines(labelled)}): the identity of a query is ignored "
            "(the workflow predicts it; answers go in solution.csv); make the rows database rows to use them as "
            "gallery photos, or empty the identity")))  # fmt: skip
    return physical_lines(warnings, file, df)


def check_solution_format(solution: pd.DataFrame, file: str) -> list[Problem]:
    """The solution's own format: its columns, unique ``image_id``, a boolean ``new`` (checked at start too)."""
    problems = check_columns(solution, SOLUTION_COLUMNS, file)
    if problems:
        return problems
    dup = solution["image_id"][solution["image_id"].duplicated()]
    for idx in dup.index:
        problems.append(Problem(file, _line(idx), f"duplicate image_id {solution.at[idx, 'image_id']!r}"))
    bad_new = ~solution["new"].str.lower().isin(["true", "false", "1", "0"])
    for idx in solution.index[bad_new]:
        problems.append(Problem(file, _line(idx), f"'new' must be True or False, got {solution.at[idx, 'new']!r}"))
    return problems


def check_solution(solution: pd.DataFrame, metadata: pd.DataFrame, file: str) -> list[Problem]:
    """The solution must list every query image exactly once with a boolean ``new``."""
    problems = check_solution_format(solution, file)
    if problems and problems[0].line == 1:  # a missing column
        return problems
    queries = set(metadata.loc[metadata["split"] == "query", "image_id"])
    listed = set(solution["image_id"])
    for image_id in sorted(queries - listed)[:20]:
        problems.append(Problem(file, None, f"query image {image_id!r} of metadata.csv is not in the solution"))
    for idx in solution.index[~solution["image_id"].isin(queries)][:20]:
        problems.append(Problem(file, _line(idx), f"{solution.at[idx, 'image_id']!r} is not a query image"))
    return problems


def read_dataset_names(root: str | Path) -> list[str]:
    """The sorted dataset names of ``<root>/metadata.csv``, checked cheaply (no image is opened).

    Run when the Snakefile is parsed: raises :class:`DataValidationError` if the file is missing or not UTF-8
    CSV, or names a dataset unsafe as a folder name; without any dataset name (no ``dataset`` column or no value
    in it) it raises with every problem the checks that need no image find. Other row problems (an empty
    ``dataset`` on some rows, ...) are left to the ``validate_data`` job, which reports them all at once.
    """
    meta_file = Path(root) / "metadata.csv"
    if not meta_file.is_file():
        raise DataValidationError([Problem(str(meta_file), None, "file does not exist")])
    df = read_table(meta_file)
    if "dataset" not in df.columns or (df["dataset"] == "").all():
        validate_dataset(root, check_files=False)  # raises with every problem listed
        raise DataValidationError([Problem(str(meta_file), None, "no row names its dataset")])
    problems = physical_lines(check_dataset_names(df, str(meta_file)), str(meta_file), df)
    if problems:
        raise DataValidationError(problems)
    return sorted(df.loc[df["dataset"] != "", "dataset"].unique())


def read_gallery_free(root: str | Path) -> list[str]:
    """Datasets of ``<root>/metadata.csv`` without any database row (read when the Snakefile is parsed)."""
    df = read_table(Path(root) / "metadata.csv")
    if not {"dataset", "split"} <= set(df.columns):
        return []
    return gallery_free_datasets(df)


def read_gallery_sizes(root: str | Path) -> dict[str, int]:
    """Individuals (distinct non-empty identities of database rows) per dataset of ``<root>/metadata.csv``."""
    df = read_table(Path(root) / "metadata.csv")
    if not {"dataset", "split", "identity"} <= set(df.columns):
        return {}
    gallery = df[(df["split"] == "database") & (df["identity"] != "") & (df["dataset"] != "")]
    sizes = gallery.groupby("dataset")["identity"].nunique()
    return {str(name): int(sizes.get(name, 0)) for name in df.loc[df["dataset"] != "", "dataset"].unique()}


def validate_dataset(
    root: str | Path,
    extra_columns: list[str] | None = None,
    check_files: bool = True,
    threads: int = 2,
    allow_external_symlinks: bool = False,
    with_solution: bool = True,
    discovery: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Validate ``root`` and return (metadata with ``abspath``/``sha1``, solution or None).

    ``with_solution=False`` leaves ``solution.csv`` unread (the workflow checks it in its own job);
    ``discovery=True`` accepts datasets without a gallery (:func:`check_split_coverage`).

    Raises :class:`DataValidationError` listing every problem found.
    """
    root = Path(root)
    meta_file = root / "metadata.csv"
    if not meta_file.is_file():
        raise DataValidationError([Problem(str(meta_file), None, "file does not exist")])
    df = read_table(meta_file)
    required = METADATA_COLUMNS + [c for c in (extra_columns or []) if c not in METADATA_COLUMNS]
    problems = check_columns(df, required, str(meta_file))
    if problems:
        raise DataValidationError(problems)
    if df.empty:
        raise DataValidationError([Problem(str(meta_file), None, "has a header but no rows: add one row per image")])
    problems = check_metadata_rows(df, str(meta_file), discovery=discovery)
    shas = [""] * len(df)
    if check_files:
        image_problems, shas = check_images(df, root, str(meta_file), threads, allow_external_symlinks)
        problems += image_problems
    solution = None
    sol_file = root / "solution.csv"
    if with_solution and sol_file.is_file():
        try:
            solution = read_table(sol_file)
            problems += check_solution(solution, df, str(sol_file))
        except DataValidationError as err:
            problems += err.problems
    problems = physical_lines(problems, str(meta_file), df)
    if solution is not None:
        problems = physical_lines(problems, str(sol_file), solution)
    if problems:
        raise DataValidationError(problems)
    df = df.assign(abspath=[str(resolved(root / p) or root / p) for p in df["path"]], sha1=shas)
    return df, solution


# The arguments of data validation (also those of ``python -m workflow.tables write``).
VALIDATE_ARGS = (
    arg("--root", required=True, help="dataset folder with metadata.csv"),
    arg("--out-dir", required=True, help="where <dataset>.tsv files go"),
    arg("--datasets", nargs="+", required=True),
    arg("--extra-columns", nargs="*", default=[]),
    arg("--threads", type=int, default=2),
    arg("--allow-external-symlinks", action="store_true",
        help="accept images that are symbolic links to files outside --root"),
    arg("--discovery", action="store_true", help="discovery runs: accept datasets without a gallery"),
)  # fmt: skip
