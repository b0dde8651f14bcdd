"""Run the Snakemake workflow from tests, in a scratch working directory linked to the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LINKED = ["Snakefile", "rules", "config", "envs", "report", "profiles"]


def make_workdir(path: Path) -> Path:
    """A working directory that sees the repository's workflow files but has its own results."""
    path.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if (REPO / name).exists() and not (path / name).exists():
            (path / name).symlink_to(REPO / name)
    return path


# seconds per Snakemake command; WORKFLOW_TEST_TIMEOUT raises it on a loaded machine
TIMEOUT = int(os.environ.get("WORKFLOW_TEST_TIMEOUT", "600"))


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int | None = None) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``workdir`` with the project environment first on PATH."""
    timeout = timeout or TIMEOUT
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [str(Path(sys.executable).parent / "snakemake"), *args]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
