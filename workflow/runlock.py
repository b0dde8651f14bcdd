"""Resume after a crash in one command: remove the directory lock that a dead Snakemake left behind.

Snakemake locks its working directory (``.snakemake/locks``) for the length of a run. A run that is killed
with SIGKILL, loses its node or its login session leaves the lock behind, and every later start fails with
"Directory cannot be locked" until ``snakemake --unlock``. Snakemake cannot tell a stale lock from a live
one (the lock files hold file names, no process id).

This module lets the workflow tell them apart: every main Snakemake process of this workflow holds a shared
``flock`` on ``.snakemake/workflow.alive`` for its whole life, and the kernel drops it when the process ends,
however it ends. A start that finds lock files *and* can take that flock exclusively knows that no Snakemake
process of this workflow is alive in the directory: the locks are stale, so it removes them and says so.
Where the file system offers no ``flock`` (some parallel file systems), nothing is removed and Snakemake's
own message (run ``--unlock``) stands. A flock may be visible only on the host that took it (Lustre's
``localflock``), so a lock is removed only on the host whose start last judged the directory
(``.snakemake/workflow.host``): a start on another login node leaves it to ``--unlock``.

Inputs: the working directory's ``.snakemake/``. Outputs: ``.snakemake/workflow.alive`` (empty),
``.snakemake/workflow.host``; ``.snakemake/locks/*.lock`` removed when stale.
"""

from __future__ import annotations

import fcntl
import logging
import socket
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

ALIVE = "workflow.alive"
HOST = "workflow.host"
# the open file whose flock marks this process as alive: it must stay open until the process ends
_held: IO | None = None


def release_stale_locks(workdir: str | Path = ".") -> list[Path]:
    """Mark this process alive; if no other process of the workflow is, remove (and return) stale locks."""
    global _held
    if _held is not None:  # the Snakefile was parsed again in this process
        return []
    meta = Path(workdir) / ".snakemake"
    meta.mkdir(parents=True, exist_ok=True)
    handle = open(meta / ALIVE, "a")  # noqa: SIM115 (held open for the life of the process)
    removed: list[Path] = []
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another Snakemake process of this workflow is alive: its locks are not ours to judge
    except OSError as err:  # no flock on this file system
        logger.debug("cannot flock %s (%s): stale locks are left to --unlock", handle.name, err)
        handle.close()
        return removed
    else:
        locks = sorted((meta / "locks").glob("*.lock"))
        host_file = meta / HOST
        last_host = host_file.read_text().strip() if host_file.is_file() else None
        if not locks or last_host == socket.gethostname():
            for lock in locks:
                lock.unlink(missing_ok=True)
                removed.append(lock)
            host_file.write_text(socket.gethostname() + "\n")
        else:
            logger.debug("locks taken on host %s: left to --unlock", last_host)
    fcntl.flock(handle, fcntl.LOCK_SH)  # alive (shared with the other live processes) until exit
    _held = handle
    return removed
