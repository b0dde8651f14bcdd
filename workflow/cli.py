"""What every stage's entry point (``python -m workflow.<stage> ...``, called by the rules) shares: logging
to the rule's log file and the thread limit."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(log: str | Path | None = None, level: int = logging.INFO) -> None:
    """Send log records (and uncaught tracebacks) to ``log`` and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log, mode="a"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )

    def _excepthook(exc_type, exc, tb):
        logging.getLogger("workflow").critical("stage failed", exc_info=(exc_type, exc, tb))

    sys.excepthook = _excepthook


def set_threads(threads: int | None) -> None:
    """Limit torch's intra-op threads to the rule's ``threads`` (no-op when not given)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
