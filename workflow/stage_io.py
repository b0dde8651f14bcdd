"""Reading and writing the workflow's tables and files, atomically (a killed job never leaves a finished-looking file).

``read_tsv``/``write_tsv`` (ids and names as exact strings), ``write_parquet``, ``read_json``/``write_json``,
``atomic_path`` and ``write_stage_outputs`` (a stage's predictions, threshold and tuning curve of one dataset).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A killed or failed writer therefore never leaves a file that looks finished.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600: give the file the mode open() would (the umask's)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as a tab-separated table, atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


# Columns of the workflow's tables that hold names and ids: always read as the exact strings written (``0012``,
# ``1e3``, ``NaN``, ``null`` and ``True`` stay as they are), with an empty cell as "" (never NA). Any column whose
# name ends in ``identity`` or ``image_id`` counts as well.
TEXT_COLUMNS = frozenset(
    {"image_id", "identity", "path", "date", "orientation", "species", "split", "dataset", "abspath", "sha1",
     "new", "top_identity", "base_identity", "decided_by", "query", "candidate", "kind", "file", "stage",
     "phase", "source"}
)  # fmt: skip
# What counts as missing in the other (numeric) columns: pandas' default NA strings.
NA_STRINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]  # fmt: skip


def is_text_column(name: str) -> bool:
    return name in TEXT_COLUMNS or name.endswith(("identity", "image_id"))


def read_tsv(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_tsv`: ids and names (:data:`TEXT_COLUMNS`) as exact strings with
    empty cells as "", every other column parsed as usual (numbers, empty cells as NaN)."""
    header = pd.read_csv(path, sep="\t", nrows=0).columns
    text = [c for c in header if is_text_column(c)]
    return pd.read_csv(
        path,
        sep="\t",
        dtype=dict.fromkeys(text, str),
        keep_default_na=False,
        na_values={c: NA_STRINGS for c in header if c not in text},
    )


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as Parquet, atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_stage_outputs(
    dataset: str, preds: pd.DataFrame, info: dict, curve: pd.DataFrame, predictions, threshold, curve_path
) -> None:
    """Log a stage's decision on one dataset and write its predictions, threshold and tuning curve."""
    share = 100 * float((preds["identity"] == "new_individual").mean()) if len(preds) else 0.0
    logging.getLogger("workflow").info(
        "%s: %d queries, threshold %.4f (%s), %.1f%% predicted new",
        dataset, len(preds), info["threshold"], info["source"], share,
    )  # fmt: skip
    write_tsv(preds, predictions)
    write_json(info, threshold)
    write_tsv(curve, curve_path)


def _json_safe(obj):
    """``obj`` with numpy scalars as Python numbers and every NaN or infinity as None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {key: _json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(value) for value in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj, path: str | Path) -> None:
    """Write ``obj`` as indented, valid JSON (NaN and infinities as null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(obj), indent=2, sort_keys=True, default=float, allow_nan=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())
