"""Entry point of the rules: ``python -m workflow.dual_backbone train|predict`` (arguments only)."""

from __future__ import annotations

import argparse
import json

from workflow.cli import set_threads, setup_logging
from workflow.dual_backbone.predict import predict_dataset
from workflow.dual_backbone.train import train_dataset
from workflow.stage_io import read_tsv


def main(argv: list[str] | None = None) -> None:
    from workflow import dual_backbone  # the package docstring describes the model and its options

    parser = argparse.ArgumentParser(
        prog="python -m workflow.dual_backbone",
        description=dual_backbone.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fine-tune a dual-backbone ArcFace model on the gallery of one dataset")
    p.add_argument("--backbones", required=True, help="JSON list of backbone configurations")
    p.add_argument("--head", default="{}", help='JSON {"s": 64, "m": 0.5, "easy_margin": false}')
    p.add_argument("--augment", default="{}", help="JSON augmentation overrides (see DEFAULT_AUGMENT)")
    p.add_argument("--epochs", default="{}", help="JSON epochs/learning rates (see DEFAULT_EPOCHS)")
    p.add_argument("--training", default="{}", help="JSON batch_size, val_fraction, seed, ... (DEFAULT_TRAINING)")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--model-out", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--mode", choices=["finetune", "frozen"], default="finetune", help="see dual_backbone_frozen")
    p.add_argument("--frozen", default="{}", help="JSON of workflow.dual_backbone_frozen.DEFAULT_FROZEN overrides")
    p = sub.add_parser("predict", help="embed gallery and queries, retrieve, threshold")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--threshold", required=True, help="JSON: a number, 'auto' or {dataset: value}")
    p.add_argument("--tuning", required=True, help="JSON of workflow.thresholds.tune_threshold kwargs")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--predictions", required=True)
    p.add_argument("--threshold-out", required=True)
    p.add_argument("--curve", required=True)
    p.add_argument("--embeddings-out")
    p.add_argument("--pseudo-out", help="per-split held-out pseudo-query predictions (.parquet)")
    for p in sub.choices.values():
        p.add_argument("--cache", default="resources/cache/embeddings", help="view cache of the frozen mode")
        p.add_argument("--metadata", required=True)
        p.add_argument("--device", default="auto")
        p.add_argument("--threads", type=int)
        p.add_argument("--log")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    set_threads(args.threads)
    meta = read_tsv(args.metadata)
    from workflow import dual_backbone_frozen as frozen  # the frozen mode (CPU) lives in its own module

    if args.command == "train" and args.mode == "frozen":
        return frozen.train_main(args, meta)
    if args.command == "predict" and frozen.is_frozen_model(args.model):
        return frozen.predict_main(args, meta)
    if args.command == "train":
        train_dataset(
            meta,
            json.loads(args.backbones),
            head_cfg=json.loads(args.head),
            augment=json.loads(args.augment),
            epochs_cfg=json.loads(args.epochs),
            training_cfg=json.loads(args.training),
            checkpoint_dir=args.checkpoint_dir,
            model_out=args.model_out,
            history_out=args.history,
            device=args.device,
            threads=args.threads,
        )
    else:
        predict_dataset(
            meta,
            args.model,
            args.dataset,
            threshold_setting=json.loads(args.threshold),
            tuning=json.loads(args.tuning),
            k=args.k,
            batch_size=args.batch_size,
            device=args.device,
            predictions_out=args.predictions,
            threshold_out=args.threshold_out,
            curve_out=args.curve,
            embeddings_out=args.embeddings_out,
            pseudo_out=args.pseudo_out,
        )
