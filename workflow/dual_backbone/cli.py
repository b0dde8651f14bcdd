"""Entry point of the rules: ``python -m workflow.dual_backbone train|predict`` (arguments only)."""

from __future__ import annotations

import argparse
import json

from workflow.cli import arg, command, run_stage, stage_parser
from workflow.dual_backbone.predict import predict_dataset
from workflow.dual_backbone.train import train_dataset
from workflow.stage_io import read_tsv


def train_command(args: argparse.Namespace) -> None:
    """``train``: the dataset's model (``--mode frozen``: a head on frozen backbones, workflow/dual_backbone_frozen)."""
    meta = read_tsv(args.metadata)
    if args.mode == "frozen":
        from workflow import dual_backbone_frozen as frozen  # the frozen mode (CPU) lives in its own module

        return frozen.train_main(args, meta)
    settings = {"head_cfg": args.head, "augment": args.augment, "epochs_cfg": args.epochs,
                "training_cfg": args.training}  # fmt: skip
    train_dataset(meta, json.loads(args.backbones), **{name: json.loads(value) for name, value in settings.items()},
                  checkpoint_dir=args.checkpoint_dir, model_out=args.model_out, history_out=args.history,
                  device=args.device, threads=args.threads)  # fmt: skip


def predict_command(args: argparse.Namespace) -> None:
    """``predict``: retrieval and open-set threshold of the dataset's queries (a frozen-mode model or not)."""
    from workflow import dual_backbone_frozen as frozen

    meta = read_tsv(args.metadata)
    if frozen.is_frozen_model(args.model):
        return frozen.predict_main(args, meta)
    predict_dataset(meta, args.model, args.dataset, threshold_setting=json.loads(args.threshold),
                    tuning=json.loads(args.tuning), k=args.k, batch_size=args.batch_size, device=args.device,
                    predictions_out=args.predictions, threshold_out=args.threshold_out, curve_out=args.curve,
                    embeddings_out=args.embeddings_out, pseudo_out=args.pseudo_out)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from workflow import dual_backbone  # the package docstring describes the model and its options

    commands = {
        "train": command(
            "fine-tune a dual-backbone ArcFace model on the gallery of one dataset",
            arg("--backbones", required=True, help="JSON list of backbone configurations"),
            arg("--head", default="{}", help='JSON {"s": 64, "m": 0.5, "easy_margin": false}'),
            arg("--augment", default="{}", help="JSON augmentation overrides (see DEFAULT_AUGMENT)"),
            arg("--epochs", default="{}", help="JSON epochs/learning rates (see DEFAULT_EPOCHS)"),
            arg("--training", default="{}", help="JSON batch_size, val_fraction, seed, ... (DEFAULT_TRAINING)"),
            arg("--checkpoint-dir", required=True), arg("--model-out", required=True), arg("--history", required=True),
            arg("--mode", choices=["finetune", "frozen"], default="finetune", help="see dual_backbone_frozen"),
            arg("--frozen", default="{}", help="JSON of workflow.dual_backbone_frozen.DEFAULT_FROZEN overrides"),
        ),
        "predict": command(
            "embed gallery and queries, retrieve, threshold", "model dataset threshold tuning",
            arg("--k", type=int, default=50), arg("--batch-size", type=int, default=16),
            "predictions threshold-out curve", arg("--embeddings-out"),
            arg("--pseudo-out", help="per-split held-out pseudo-query predictions (.parquet)"),
        ),
    }  # fmt: skip
    parser = stage_parser(
        dual_backbone.__doc__,
        arg("--cache", required=False, default="resources/cache/embeddings", help="view cache of the frozen mode"),
        "metadata device threads log", commands=commands, prog="python -m workflow.dual_backbone",
    )  # fmt: skip
    run_stage(parser, argv, {"train": train_command, "predict": predict_command}, torch_threads=True)
