"""Finding things of the enrollment: the gallery-versions folder of the data, and the decision file a browser saved.

The versions of a data folder are kept under ``<enrollment_dir>/<folder name>-<8 hex of its real path>`` and found by
what the data is, not by how ``data_root`` spells it (:func:`find_enrollment_dir`); ``data.json`` in that folder
records the data's real path and the sha1 of its ``metadata.csv``, so a moved copy finds its versions too.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from workflow.data import hash_file
from workflow.stage_io import atomic_path

# The data's identity in a version folder: its real path and the sha1 of its metadata.csv.
DATA_FILE = "data.json"


def _folder(base: str | Path, root: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(root).name).strip("._-") or "data"
    return Path(base) / f"{name[:40]}-{hashlib.sha1(root.encode()).hexdigest()[:8]}"


def metadata_fingerprint(data_root: str | Path) -> str:
    """sha1 of ``<data_root>/metadata.csv`` (empty when it does not exist yet, as the demo's before it is made)."""
    path = Path(data_root) / "metadata.csv"
    return hash_file(path) if path.is_file() else ""


def find_enrollment_dir(base: str | Path, data_root: str | Path) -> tuple[Path, str]:
    """The folder of the gallery versions of the data at ``data_root``, and how it was found (for the log).

    The data is known by its identity, not by the string that names it: its folder is
    ``<base>/<folder name>-<8 hex of the resolved real path>``, so ``../data``, ``./data``, the absolute path and
    a symbolic link to it find the same versions. A copy or move of the data (another real path) finds the
    folder whose recorded ``metadata.csv`` fingerprint (:data:`DATA_FILE`, refreshed at each start) matches; a
    folder of versions 0.x made keyed by the path string as given is found too.
    """
    real = os.path.realpath(str(data_root))
    own = _folder(base, real)
    if own.is_dir():
        return own, "its real path"
    legacy = _folder(base, os.path.normpath(str(data_root)))
    if legacy.is_dir():
        return legacy, f"the path string {str(data_root)!r} (a folder made before versions were keyed by real path)"
    fingerprint = metadata_fingerprint(data_root)
    if fingerprint and Path(base).is_dir():
        for folder in sorted(Path(base).iterdir()):
            recorded = _read_json(folder / DATA_FILE)
            if recorded.get("metadata_sha1") == fingerprint:
                return folder, f"the fingerprint of metadata.csv (the data was at {recorded.get('data_root')!r})"
    return own, "its real path (no version yet)"


def enrollment_dir(base: str | Path, data_root: str | Path) -> Path:
    """The folder of the gallery versions of ``data_root`` (see :func:`find_enrollment_dir`)."""
    return find_enrollment_dir(base, data_root)[0]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def record_data(directory: str | Path, data_root: str | Path) -> None:
    """Write the data's identity (real path, ``metadata.csv`` sha1) into an existing version folder, if changed."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    info = {"data_root": os.path.realpath(str(data_root)), "metadata_sha1": metadata_fingerprint(data_root)}
    if _read_json(directory / DATA_FILE) != info:
        with atomic_path(directory / DATA_FILE) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def download_dirs(env: dict | None = None, home: str | Path | None = None) -> list[Path]:
    """Where browsers save downloads: ``$XDG_DOWNLOAD_DIR``, the ``XDG_DOWNLOAD_DIR`` of
    ``~/.config/user-dirs.dirs``, then ``~/Downloads`` (each once, in that order)."""
    env = os.environ if env is None else env
    home = Path(home if home is not None else Path.home())
    found = [env.get("XDG_DOWNLOAD_DIR", "")]
    dirs = home / ".config" / "user-dirs.dirs"
    if dirs.is_file():
        for line in dirs.read_text(errors="replace").splitlines():
            m = re.match(r'\s*XDG_DOWNLOAD_DIR\s*=\s*"?([^"]*)"?\s*$', line)
            if m:
                found.append(m.group(1).replace("$HOME", str(home)))
    found.append(str(home / "Downloads"))
    return [Path(d) for d in dict.fromkeys(d for d in found if d)]


def locate_decisions(given: str, env: dict | None = None, home: str | Path | None = None) -> tuple[Path | None, str]:
    """The decision file named ``given``, also looked for (a relative path or a bare name) in the downloads folders
    (:func:`download_dirs`); else None and an error that says where it looked and where to put the file."""
    path = Path(given).expanduser()
    if path.is_file():
        return path, ""
    looked = [path.absolute()]
    if not path.is_absolute():
        for folder in download_dirs(env, home):
            candidate = folder / path
            looked.append(candidate)
            if candidate.is_file():
                return candidate, ""
    similar = sorted(
        str(q) for folder in {p.parent for p in looked} if folder.is_dir() for q in folder.glob(f"{path.stem}*.csv")
    )
    hint = f"; files with a similar name: {', '.join(similar[:5])}" if similar else ""
    return None, (
        f"decisions file {given!r} not found; looked at {', '.join(map(str, looked))}{hint}. Save the CSV the review "
        'page downloads (button "Download decisions (CSV)") into one of these, or give its full path: '
        "snakemake enroll --cores 1 --config decisions=/full/path/review-DATASET-decisions.csv"
    )
