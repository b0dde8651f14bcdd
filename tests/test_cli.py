"""The shared declaration of stage arguments (workflow/cli.py) and every entry point built with it."""

import importlib
import re
from pathlib import Path

import pytest

from workflow.cli import arg, command, stage_parser

ROOT = Path(__file__).resolve().parents[1]
# Every module a rule runs with `python -m workflow.NAME`, read from the rules so the list cannot drift.
ENTRY_POINTS = sorted({name for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
                       for name in re.findall(r"python -m workflow\.([a-z_.]+)", path.read_text())})  # fmt: skip


def test_common_arguments_by_name_with_overrides():
    parser = stage_parser("doc", arg("--metadata", nargs="+"), "out log", arg("--k", type=int, default=3))
    args = parser.parse_args(["--metadata", "a.tsv", "--out", "o"])
    assert args.metadata == ["a.tsv"] and args.out == "o" and args.k == 3 and args.log is None
    assert "validated table" in parser.format_help()  # the common help stays with the override
    with pytest.raises(SystemExit):  # --out is required
        parser.parse_args(["--metadata", "a.tsv"])


def test_subcommands_take_their_own_then_the_shared_arguments():
    parser = stage_parser("doc", "log", commands={"a": command("help a", arg("--x", required=True)),
                                                  "b": command(None, "out")})  # fmt: skip
    args = parser.parse_args(["a", "--x", "1", "--log", "l"])
    assert (args.command, args.x, args.log) == ("a", "1", "l")
    assert parser.parse_args(["b", "--out", "o"]).out == "o"


def test_an_unknown_common_name_is_refused():
    with pytest.raises(KeyError, match="no common argument 'bogus'"):
        stage_parser("doc", "bogus")


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_declares_its_arguments(name, capsys):
    module = importlib.import_module(f"workflow.{name}")
    if hasattr(module, "__path__"):  # a package runs its cli module (its __main__.py calls cli.main)
        module = importlib.import_module(f"workflow.{name}.cli")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out
