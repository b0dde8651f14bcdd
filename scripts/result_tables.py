"""Write the demo's tables in README.md and docs/benchmarks.md from a finished run's results.

The tables sit between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` markers (``scores``: the ablation
table of ``results/scores.tsv``; ``discovery``: ``results/discovery_scores.tsv`` against the trivial clusterings),
three decimals per number. ``--check`` exits 1 when a committed table differs from the run's (tests/
test_demo_results.py runs the demo and checks, so a change that moves a number is seen in CI).

Usage: ``python scripts/result_tables.py [--results results] [--check] [FILE ...]``
(default files: README.md and docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FILES = ("README.md", "docs/benchmarks.md")
STAGES = ("baseline", "wildfusion", "rerank", "xgboost", "dual_backbone", "cascade")
REFERENCES = {"discovery": "discovery", "new_alone": "every new photo alone", "new_together": "all new photos in one"}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"stage": str, "dataset": str}, keep_default_na=False)


def _datasets(table: pd.DataFrame) -> list[str]:
    return sorted(d for d in table["dataset"].unique() if d != "ALL")


def scores_table(scores: pd.DataFrame, submission_stage: str = "cascade") -> str:
    """Markdown: one row per stage, the score of each dataset and ALL with its BAKS / BAUS."""
    datasets = _datasets(scores)
    lines = [
        "| stage | " + " | ".join(datasets) + " | **ALL** (BAKS / BAUS) |",
        "|---" * (len(datasets) + 2) + "|",
    ]
    by = scores.set_index(["stage", "dataset"])
    for stage in [s for s in STAGES if s in set(scores["stage"])]:
        label = f"{stage} (submission)" if stage == submission_stage else stage
        cells = [f"{float(by.loc[(stage, d), 'score']):.3f}" if (stage, d) in by.index else "" for d in datasets]
        total = by.loc[(stage, "ALL")]
        cells.append(f"**{float(total['score']):.3f}** ({float(total['BAKS']):.3f} / {float(total['BAUS']):.3f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def discovery_table(table: pd.DataFrame) -> str:
    """Markdown: ARI / AMI of discovery and of the trivial clusterings, per dataset and ALL."""
    datasets = [*_datasets(table), "ALL"]
    lines = ["| | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
    by = table.set_index(["stage", "dataset"])
    for stage, label in REFERENCES.items():
        if stage not in set(table["stage"]):
            continue
        cells = [f"{float(by.loc[(stage, d), 'ARI']):.3f} / {float(by.loc[(stage, d), 'AMI']):.3f}" for d in datasets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: Path) -> dict[str, str]:
    """``{name: markdown}`` of the tables a finished run's ``results`` folder gives."""
    tables = {"scores": scores_table(_read(results / "scores.tsv"))}
    if (results / "discovery_scores.tsv").is_file():
        tables["discovery"] = discovery_table(_read(results / "discovery_scores.tsv"))
    return tables


def replace_blocks(text: str, tables: dict[str, str]) -> str:
    """``text`` with every marked block replaced by its table (blocks of other names kept)."""

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in tables:
            return match.group(0)
        return f"<!-- results:{name} -->\n{tables[name]}\n<!-- /results:{name} -->"

    return re.sub(r"<!-- results:(\w+) -->\n.*?<!-- /results:\1 -->", sub, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=[REPO / f for f in FILES])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the run's results folder")
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed table differs")
    args = parser.parse_args(argv)
    tables = render(args.results)
    stale = []
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        if not re.search(r"<!-- results:\w+ -->", text):
            raise SystemExit(f"{path}: no <!-- results:NAME --> block to fill")
        new = replace_blocks(text, tables)
        if new != text:
            stale.append(str(path))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"stale result tables in {', '.join(stale)}: rerun the demo and `python scripts/result_tables.py`",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
