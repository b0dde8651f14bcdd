"""What every stage's entry point (``python -m workflow.<stage> ...``, called by the rules) shares: logging to
the rule's log file, the thread limit, and one declarative way to state its arguments.

A stage declares its command line with :func:`stage_parser` (common arguments by name, see :data:`COMMON`; its
own with :func:`arg`; subcommands with :func:`command`) and runs with :func:`run_stage`, so that ``main()`` only
wires arguments to the stage's functions.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits


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


# ------------------------------------------------------------------------------------------ stage arguments

# Arguments that several stages take, declared once: a stage names them (``"metadata"``) or overrides a part
# (``arg("--metadata", nargs="+")`` keeps the help, changes nargs). Every flag keeps its rule-facing spelling.
COMMON: dict[str, dict[str, Any]] = {
    "metadata": {"required": True, "help": "the dataset's validated table (results/data/<dataset>.tsv)"},
    "embeddings": {"required": True, "help": "embeddings .npz of the global backbone"},
    "dataset": {"required": True},
    "threshold": {"required": True, "help": "JSON: a number, 'auto' or {dataset: value}"},
    "tuning": {"required": True, "help": "JSON: threshold_tuning (workflow.thresholds.tune_threshold)"},
    "predictions": {"required": True},
    "threshold-out": {"required": True},
    "curve": {"required": True},
    "pairs-out": {"required": True},
    "cost": {"required": True},
    "pseudo": {"help": "pseudo.parquet: the stage on the simulated open-set splits of the gallery"},
    "shortlist": {"required": True},
    "model": {"required": True},
    "solution": {"required": True},
    "conf": {"required": True, "help": "JSON: the stage's config section"},
    "cache": {"required": True},
    "device": {"default": "auto", "help": "auto, cpu or cuda"},
    "threads": {"type": int},
    "out": {"required": True},
    "log": {"help": "log file"},
    "matchers": {"nargs": "*", "default": []},
    "shards": {"nargs": "*", "default": []},
    "calibrators": {"nargs": "+", "required": True, "help": "cosine first, then --matchers order"},
    "weights": {"default": "{}"},
}


@dataclass(frozen=True)
class Arg:
    """One argument: its flag and ``add_argument`` keywords (over those of :data:`COMMON` for a common flag)."""

    flag: str
    options: Mapping[str, Any] = field(default_factory=dict)


def arg(flag: str, **options: Any) -> Arg:
    return Arg(flag, options)


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line and arguments (``python -m workflow.<stage> <name> ...``)."""

    help: str | None
    args: tuple[str | Arg, ...]


def command(help: str | None, *args: str | Arg) -> Command:
    return Command(help, args)


def _add(parser: argparse.ArgumentParser, specs: Sequence[str | Arg]) -> None:
    """Add ``specs``: a string names common arguments (space-separated), an :class:`Arg` one argument."""
    for spec in specs:
        for one in spec.split() if isinstance(spec, str) else [spec]:
            flag = one if isinstance(one, Arg) else Arg(f"--{one}")
            options = {**COMMON.get(flag.flag.removeprefix("--"), {}), **flag.options}
            if isinstance(one, str) and one not in COMMON:
                raise KeyError(f"no common argument {one!r}: declare it with arg('--{one}', ...)")
            parser.add_argument(flag.flag, **options)


def stage_parser(
    description: str | None,
    *args: str | Arg,
    commands: Mapping[str, Command] | None = None,
    prog: str | None = None,
) -> argparse.ArgumentParser:
    """The parser of a stage's entry point: ``args`` for the stage (with ``commands``, added to every subcommand
    after its own), in the order given; the module docstring is the description."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    if commands is None:
        _add(parser, args)
        return parser
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cmd in commands.items():
        _add(sub.add_parser(name, help=cmd.help), [*cmd.args, *args])
    return parser


def run_stage(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    run: Callable[[argparse.Namespace], Any] | Mapping[str, Callable[[argparse.Namespace], Any]],
    torch_threads: bool = False,
) -> Any:
    """Parse ``argv``, log to ``--log``, limit torch to ``--threads`` (``torch_threads``), then call ``run(args)``
    (with subcommands: ``run[args.command](args)``)."""
    args = parser.parse_args(argv)
    setup_logging(args.log)
    if torch_threads:
        set_threads(args.threads)
    handler = run[args.command] if isinstance(run, Mapping) else run
    # BLAS and OpenMP pools sized by the job, not by the node it lands on: reductions then add in the same order on a
    # laptop and on a 64-core cluster node (the rule's threads where the stage takes them, else one).
    with threadpool_limits(limits=int(getattr(args, "threads", None) or 1)):
        return handler(args)


def named_paths(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``NAME=PATH`` arguments of ``--<what>`` as ``{name: path}`` (exits with the offending item otherwise)."""
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--{what} expects NAME=PATH, got {item!r}")
        out[name] = path
    return out
