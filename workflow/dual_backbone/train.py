"""Training of the dual-backbone model: the three-phase schedule, the loop, resumable checkpoints.

Inputs: ``results/data/<dataset>.tsv`` (the gallery rows) and the backbone, head, augmentation, epochs and
training settings. Outputs: the model file (``.pt``) and the training history (``.tsv``); a resume
checkpoint ``last.pt`` in the checkpoint folder while training runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from workflow.backbones import resolve_device
from workflow.dual_backbone.data import (
    ImageDataset,
    _orientations,
    build_eval_transform,
    build_train_transform,
    make_sampler,
    stratified_split,
    warm_background,
    with_defaults,
)
from workflow.dual_backbone.model import ArcFaceHead, DualBackbone, save_model
from workflow.safe_files import rng_state, safe_load, set_rng_state, workers_for_threads
from workflow.stage_io import atomic_path, write_tsv

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"

DEFAULT_EPOCHS: dict[str, Any] = {
    "warmup": 2,  # epochs training the head, BatchNorms and the top `top_fraction` of backbone layers
    "main": 10,  # epochs training the full network with cosine annealing
    "final": 2,  # last epochs at lr_final
    "lr_warmup": 1e-2,
    "lr_main": 5e-3,  # start of the cosine schedule, which anneals towards lr_final
    "lr_final": 1e-4,
    "top_fraction": 0.25,
}

DEFAULT_TRAINING: dict[str, Any] = {
    "batch_size": 16,
    "val_fraction": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "seed": 0,
    "num_workers": 0,  # DataLoader worker processes (decoding, augmentation and GrabCut run there)
    "precision": "fp32",  # fp32 | bf16 (autocast of the forward pass and loss; weights and optimizer stay fp32)
}


@dataclass(frozen=True)
class EpochPlan:
    """One epoch of the schedule: 1-based ``epoch``, ``phase`` name, learning rate and what is trained."""

    epoch: int
    phase: str  # warmup | main | final
    lr: float
    trainable: str  # "top" (head, BatchNorms, top layers) | "all"


def resolve_epochs(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    out = with_defaults(cfg, DEFAULT_EPOCHS, "epochs")
    for key in ("warmup", "main", "final"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0:
            raise ValueError(f"epochs {key} must be a non-negative integer, got {out[key]!r}")
    if out["warmup"] + out["main"] + out["final"] < 1:
        raise ValueError("epochs warmup + main + final must be at least 1")
    if not 0 < float(out["top_fraction"]) <= 1:
        raise ValueError(f"epochs top_fraction must be in (0, 1], got {out['top_fraction']!r}")
    return out


def phase_schedule(epochs_cfg: Mapping[str, Any] | None) -> list[EpochPlan]:
    """The three-phase SGD schedule, one :class:`EpochPlan` per epoch.

    ``warmup`` epochs at ``lr_warmup`` training the top layers only; ``main`` epochs training all with
    ``lr_final + (lr_main - lr_final) * (1 + cos(pi * i / main)) / 2`` for ``i = 0 .. main-1``; ``final`` epochs at
    ``lr_final`` training all.
    """
    cfg = resolve_epochs(epochs_cfg)
    plan, epoch = [], 0
    for _ in range(cfg["warmup"]):
        epoch += 1
        plan.append(EpochPlan(epoch, "warmup", float(cfg["lr_warmup"]), "top"))
    lo, hi = float(cfg["lr_final"]), float(cfg["lr_main"])
    for i in range(cfg["main"]):
        epoch += 1
        plan.append(EpochPlan(epoch, "main", lo + (hi - lo) * (1 + math.cos(math.pi * i / cfg["main"])) / 2, "all"))
    for _ in range(cfg["final"]):
        epoch += 1
        plan.append(EpochPlan(epoch, "final", lo, "all"))
    return plan


def _layers(module: nn.Module) -> list[nn.Module]:
    """Modules holding parameters directly, in registration order (the "layers" the top fraction counts)."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def set_trainable(model: DualBackbone, head: nn.Module, trainable: str, top_fraction: float = 0.25) -> None:
    """``all``: every parameter; ``top``: the head, the BatchNorms and the last ``top_fraction`` of each branch."""
    if trainable == "all":
        for p in [*model.parameters(), *head.parameters()]:
            p.requires_grad_(True)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*model.norms.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    for branch in model.branches:
        layers = _layers(branch)
        for layer in layers[len(layers) - max(1, math.ceil(top_fraction * len(layers))) :]:
            for p in layer.parameters(recurse=False):
                p.requires_grad_(True)


def _plan_key(plan: Sequence[EpochPlan]) -> list[list]:
    return [[p.epoch, p.phase, round(p.lr, 12), p.trainable] for p in plan]


def evaluate_accuracy(model: DualBackbone, head: ArcFaceHead, loader: DataLoader, device: str) -> float:
    """Closed-set accuracy of ``argmax`` of the head's cosine logits; NaN for an empty loader."""
    was = model.training, head.training
    model.eval(), head.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            pred = head(model(x.to(device))).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    model.train(was[0]), head.train(was[1])
    return correct / total if total else float("nan")


def train(
    model: DualBackbone,
    head: ArcFaceHead,
    train_set: Dataset,
    val_set: Dataset | None,
    train_labels: Sequence[int],
    *,
    checkpoint_dir: str | Path,
    epochs_cfg: Mapping[str, Any] | None = None,
    training_cfg: Mapping[str, Any] | None = None,
    device: str = "cpu",
    stop_after: int | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Train ``model`` and ``head`` in place on the three-phase schedule; returns the history (one row per epoch).

    After each epoch ``checkpoint_dir/last.pt`` is replaced atomically (model, head, optimizer, schedule,
    epoch, history, RNG states); when it exists at the start, training resumes after its epoch (the schedule
    must be the same). ``stop_after`` ends this call after that many epochs in total (for time-boxed jobs;
    rerunning resumes). The log gets epoch, phase, lr, loss and validation accuracy.
    """
    cfg = {**DEFAULT_TRAINING, **(training_cfg or {})}
    unknown = sorted(set(cfg) - set(DEFAULT_TRAINING))
    if unknown:
        raise ValueError(f"unknown training key(s) {unknown}; known: {sorted(DEFAULT_TRAINING)}")
    if cfg["precision"] not in ("fp32", "bf16"):
        raise ValueError(f"training precision must be 'fp32' or 'bf16', got {cfg['precision']!r}")
    epochs = resolve_epochs(epochs_cfg)
    plan = phase_schedule(epochs)
    device = resolve_device(device)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg["precision"] == "bf16")
    model.to(device), head.to(device)
    optimizer = torch.optim.SGD(
        [*model.parameters(), *head.parameters()],
        lr=plan[0].lr,
        momentum=float(cfg["momentum"]),
        weight_decay=float(cfg["weight_decay"]),
    )
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME
    history: list[dict[str, Any]] = []
    done = 0
    torch.manual_seed(int(cfg["seed"]))
    if ckpt_path.exists():
        state = safe_load(ckpt_path, map_location=device, what="resume checkpoint (delete it to restart training)")
        if state["plan"] != _plan_key(plan):
            raise ValueError(
                f"checkpoint {ckpt_path} was written for another schedule ({len(state['plan'])} epochs); "
                "delete it or restore the epochs configuration it was trained with"
            )
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        done, history = int(state["epoch"]), list(state["history"])
        logger.info("resuming from %s after epoch %d/%d", ckpt_path, done, len(plan))
    batch_size = int(cfg["batch_size"])
    loader_kw = {"batch_size": batch_size, "num_workers": workers_for_threads(cfg["num_workers"], threads)}
    val_loader = DataLoader(val_set, shuffle=False, **loader_kw) if val_set is not None and len(val_set) else None
    criterion = nn.CrossEntropyLoss()
    for step in plan[done:]:
        if stop_after is not None and step.epoch > stop_after:
            break
        start = time.perf_counter()
        set_trainable(model, head, step.trainable, float(epochs["top_fraction"]))
        for group in optimizer.param_groups:
            group["lr"] = step.lr
        sampler = make_sampler(train_labels, seed=int(cfg["seed"]) + step.epoch)
        # BatchNorm needs two or more samples: drop a last batch of one.
        loader = DataLoader(train_set, sampler=sampler, drop_last=len(train_set) % batch_size == 1, **loader_kw)
        model.train(), head.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with autocast:  # the backbones in bf16 when asked; the ArcFace margin and the loss stay in fp32
                emb = model(x)
            loss = criterion(head(emb.float(), y), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        val_acc = evaluate_accuracy(model, head, val_loader, device) if val_loader else float("nan")
        row = {"epoch": step.epoch, "phase": step.phase, "lr": step.lr, "loss": total / max(n, 1),
               "val_accuracy": val_acc, "seconds": time.perf_counter() - start}  # fmt: skip
        history.append(row)
        logger.info("epoch %d/%d (%s, lr %.2e): loss %.4f, validation accuracy %.3f, %.1f s",
                    step.epoch, len(plan), step.phase, step.lr, row["loss"], val_acc, row["seconds"])  # fmt: skip
        state = {"model": model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                 "plan": _plan_key(plan), "epoch": step.epoch, "history": history, "rng": rng_state()}  # fmt: skip
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)
    for p in [*model.parameters(), *head.parameters()]:
        p.requires_grad_(True)
    return pd.DataFrame(history, columns=["epoch", "phase", "lr", "loss", "val_accuracy", "seconds"])


def train_dataset(
    meta: pd.DataFrame,
    backbones: Sequence[str | Mapping[str, Any]],
    *,
    head_cfg: Mapping[str, Any],
    augment: Mapping[str, Any],
    epochs_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any],
    checkpoint_dir: str | Path,
    model_out: str | Path,
    history_out: str | Path,
    device: str = "auto",
    threads: int | None = None,
) -> None:
    """Fine-tune one model on the gallery rows (``split == "database"``) of ``meta`` and write its files.

    Writes the model file ``model_out`` (:func:`workflow.dual_backbone.model.save_model`) and the history
    ``history_out`` (one row per epoch), then removes the resume checkpoint of ``checkpoint_dir``.
    """
    gal = meta[meta["split"] == "database"].reset_index(drop=True)
    training = {**DEFAULT_TRAINING, **training_cfg}
    training["num_workers"] = workers_for_threads(training["num_workers"], threads)
    # seed before building: randomly initialised branches and the ArcFace head must be reproducible
    torch.manual_seed(int(training["seed"]))
    model = DualBackbone.from_config(backbones)
    classes = sorted(set(gal["identity"]))
    labels = gal["identity"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    head = ArcFaceHead(model.embed_dim, len(classes), **head_cfg)
    tr, va = stratified_split(gal["identity"].to_numpy(), float(training["val_fraction"]), int(training["seed"]))
    paths, orient = gal["abspath"].tolist(), _orientations(gal)
    size = model.input_size
    train_set = ImageDataset([paths[i] for i in tr], labels[tr], [orient[i] for i in tr],
                             build_train_transform(augment, size))  # fmt: skip
    val_set = ImageDataset([paths[i] for i in va], labels[va], [orient[i] for i in va],
                           build_eval_transform(augment, size))  # fmt: skip
    logger.info("%d individuals, %d training and %d validation images, embedding %d-d",
                len(classes), len(tr), len(va), model.embed_dim)  # fmt: skip
    if int(training["num_workers"]) > 0:  # workers are forked every epoch: give them the masks
        warm_background([paths[i] for i in tr], [orient[i] for i in tr], augment)
    history = train(model, head, train_set, val_set, labels[tr], checkpoint_dir=checkpoint_dir,
                    epochs_cfg=epochs_cfg, training_cfg=training, device=device,
                    threads=threads)  # fmt: skip
    save_model(model_out, model.cpu(), head.cpu(), classes, augment)
    write_tsv(history, history_out)
    # the resume checkpoint (model + optimizer state: 2 GB for the paper's branches) has served its purpose
    (Path(checkpoint_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)
