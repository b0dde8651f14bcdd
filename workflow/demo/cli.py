"""Entry point of the ``demo_data`` rule: ``python -m workflow.demo --config ... --out ... [--log ...]``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import yaml

from workflow import demo  # the package docstring describes the inputs and outputs
from workflow.cli import arg, run_stage, stage_parser
from workflow.demo.plan import demo_datasets_from_config, demo_settings_from_config
from workflow.demo.write import generate_demo

logger = logging.getLogger(__name__)


def read_config(value: str) -> dict:
    """The ``--config`` argument: an inline JSON object or a YAML/JSON file."""
    text = value.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--config looks like inline JSON but does not parse: {err}") from None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--config {value!r} is neither inline JSON nor an existing file")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a mapping (the demo section or a config with a 'demo' key)")
    return cfg


def run(args: argparse.Namespace) -> None:
    """Generate the demo data set described by ``--config`` in ``--out``."""
    try:
        cfg = read_config(args.config)
        datasets = demo_datasets_from_config(cfg)
        seed, image_size = demo_settings_from_config(cfg)
    except ValueError as err:
        logger.error("%s", err)
        raise SystemExit(1) from None
    logger.info("generating %d demo dataset(s) in %s (seed %d, %d px)", len(datasets), args.out, seed, image_size)
    start = time.perf_counter()
    metadata, solution = generate_demo(args.out, datasets, seed, image_size)
    logger.info(
        "wrote %d images (%d query, %d of new individuals) in %.1f s",
        len(metadata),
        len(solution),
        int(solution["new"].sum()),
        time.perf_counter() - start,
    )


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(
        demo.__doc__,
        arg("--config", required=True, help="demo section (or whole config): inline JSON or a YAML/JSON file"),
        arg("--out", help="output folder (AnimalCLEF 2025 layout)"), "log", prog="python -m workflow.demo",
    )  # fmt: skip
    run_stage(parser, argv, run)
