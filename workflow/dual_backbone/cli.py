"""Entry point of the rules: ``python -m workflow.dual_backbone train|predict|embed|pairs`` (arguments only).

``train`` fine-tunes (:mod:`~workflow.dual_backbone.train`) or, with ``--mode frozen``, trains a head on frozen
backbones (:mod:`~workflow.dual_backbone.frozen`); ``predict`` dispatches on the model file
(:mod:`~workflow.dual_backbone.predict`); ``embed`` and ``pairs`` serve the shortlist's and the fusion's
``trained`` source (:func:`~workflow.dual_backbone.predict.embed_table`,
:func:`~workflow.dual_backbone.heldout.shortlist_pair_scores`).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from workflow import dual_backbone  # the package docstring describes the model and its options
from workflow.cli import arg, command, run_stage, stage_parser
from workflow.dual_backbone import frozen
from workflow.dual_backbone.heldout import shortlist_pair_scores
from workflow.dual_backbone.predict import embed_table, predict_dataset
from workflow.dual_backbone.train import train_dataset
from workflow.embed import save_embeddings
from workflow.stage_io import read_tsv, write_parquet


def train_command(args: argparse.Namespace) -> None:
    """``train``: the dataset's model (``--mode frozen``: a head on frozen backbones, :mod:`.frozen`)."""
    meta = read_tsv(args.metadata)
    if args.mode == "frozen":
        return frozen.train_main(args, meta)
    settings = {"head_cfg": args.head, "augment": args.augment, "epochs_cfg": args.epochs,
                "training_cfg": args.training}  # fmt: skip
    train_dataset(meta, json.loads(args.backbones), **{name: json.loads(value) for name, value in settings.items()},
                  checkpoint_dir=args.checkpoint_dir, model_out=args.model_out, history_out=args.history,
                  device=args.device, threads=args.threads)  # fmt: skip


def predict_command(args: argparse.Namespace) -> None:
    """``predict``: retrieval and open-set threshold of the dataset's queries (a frozen-mode model or not)."""
    meta = read_tsv(args.metadata)
    outputs = {"predictions_out": args.predictions, "threshold_out": args.threshold_out, "curve_out": args.curve,
               "embeddings_out": args.embeddings_out, "pseudo_out": args.pseudo_out}  # fmt: skip
    predict_dataset(meta, args.model, args.dataset, threshold_setting=json.loads(args.threshold),
                    tuning=json.loads(args.tuning), k=args.k, batch_size=args.batch_size, device=args.device,
                    cache=args.cache, **outputs)  # fmt: skip


def embed_command(args: argparse.Namespace) -> None:
    """``embed``: embeddings of every image of the table by the trained model."""
    meta = read_tsv(args.metadata)
    save_embeddings(args.out, meta["image_id"].to_numpy(), embed_table(args.model, meta, args.cache, args.device))


def pairs_command(args: argparse.Namespace) -> None:
    """``pairs``: held-out raw scores of the shortlist pairs (:mod:`workflow.dual_backbone.heldout`)."""
    meta = read_tsv(args.metadata)
    write_parquet(shortlist_pair_scores(args.model, meta, pd.read_parquet(args.shortlist), args.cache, args.device),
                  args.out)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    commands = {
        "train": command(
            "fine-tune a dual-backbone ArcFace model on the gallery of one dataset",
            arg("--backbones", required=True, help="JSON list of backbone configurations"),
            arg("--head", default="{}", help='JSON {"s": 64, "m": 0.5, "easy_margin": false}'),
            arg("--augment", default="{}", help="JSON augmentation overrides (see DEFAULT_AUGMENT)"),
            arg("--epochs", default="{}", help="JSON epochs/learning rates (see DEFAULT_EPOCHS)"),
            arg("--training", default="{}", help="JSON batch_size, val_fraction, seed, ... (DEFAULT_TRAINING)"),
            arg("--checkpoint-dir", required=True), arg("--model-out", required=True), arg("--history", required=True),
            arg("--mode", choices=["finetune", "frozen"], default="finetune", help="see workflow.dual_backbone.frozen"),
            arg("--frozen", default="{}", help="JSON of workflow.dual_backbone.frozen.DEFAULT_FROZEN overrides"),
        ),
        "predict": command(
            "embed gallery and queries, retrieve, threshold", "model dataset threshold tuning",
            arg("--k", type=int, default=50), arg("--batch-size", type=int, default=16),
            "predictions threshold-out curve", arg("--embeddings-out"),
            arg("--pseudo-out", help="per-split held-out pseudo-query predictions (.parquet)"),
        ),
        "embed": command("embeddings of every image by the trained model (shortlist backbone 'trained')", "model out"),
        "pairs": command("held-out raw scores of the shortlist pairs (WildFusion source 'trained')",
                         "model shortlist out"),
    }  # fmt: skip
    parser = stage_parser(
        dual_backbone.__doc__,
        arg("--cache", required=False, default="resources/cache/embeddings", help="view cache of the frozen mode"),
        "metadata device threads log", commands=commands, prog="python -m workflow.dual_backbone",
    )  # fmt: skip
    handlers = {"train": train_command, "predict": predict_command, "embed": embed_command, "pairs": pairs_command}
    run_stage(parser, argv, handlers, torch_threads=True)
