"""Dual-backbone ArcFace model (the paper's Sec. 3.6 and step 5): one network per dataset, fine-tuned per species.

Two :class:`workflow.backbones.Backbone` networks (paper: MegaDescriptor-L-384, 1536-d, and MIEW-msv3, 2152-d;
the demo: small CPU backbones) without classification heads, a separate ``BatchNorm1d`` on each output, the
two vectors concatenated (``[B x (D1 + D2)]``, 3688-d in the paper) and an :class:`ArcFaceHead` with per-dataset
``(s, m)`` (paper: (64, 0.5) lynx and turtle, (30, 0.35) salamander). Retrieval: L2-normalised gallery and
query embeddings in a faiss ``IndexFlatIP``, ``k`` nearest neighbours, confidence ``(cos + 1) / 2``.

Training (:func:`train`): stratified 90/10 train/validation split (:func:`stratified_split`), a
``WeightedRandomSampler`` with weight ``1 / count(identity)`` (:func:`make_sampler`), SGD in three phases
(:func:`phase_schedule`): ``warmup`` epochs training the head, the BatchNorms and the top 25% of each backbone's
layers at 1e-2; ``main`` epochs training everything from 5e-3 with cosine annealing; ``final`` epochs at 1e-4.
A checkpoint is written atomically after every epoch and an interrupted run resumes from it.

Augmentations (:func:`build_train_transform`, config mapping, see :data:`DEFAULT_AUGMENT` and
:data:`PAPER_AUGMENT`), applied in this order:

``background``
    ``none`` or ``grabcut``. The paper removes the lynx background with segmentation masks; no segmentation
    model is available offline here, so ``grabcut`` is a **stand-in**: OpenCV GrabCut initialised with a
    central rectangle (``grabcut_margin`` of each side left out), background pixels set to black. It is a
    named option, off unless configured, and it also runs at embedding time so train and test images match.
``rotate_by_orientation``
    ``{orientation value: degrees counter-clockwise}`` (salamander: images rotated by the ``orientation``
    column of the metadata); deterministic, also applied at embedding time. Unlisted values are not rotated.
``crop_scale``
    ``[min, max]`` area scale of ``RandomResizedCrop`` (lynx: ``[0.9, 1.0]``; "moderate": ``[0.7, 1.0]``);
    ``null`` resizes without cropping.
``hflip``
    probability of a horizontal flip (turtle: 0.5).
``color_jitter``
    ``[brightness, contrast, saturation, hue]`` of ``ColorJitter`` (``null``: none).
``coarse_dropout``
    ``{p, max_area}``: with probability ``p`` one rectangle of at most ``max_area`` of the image (paper: 10%)
    is set to 0 (``RandomErasing`` with one hole), after the image is a tensor.

The stage has two modes (``dual_backbone.mode``): ``finetune``, the paper's full fine-tuning (GPUs), and
``frozen``, a head trained on cached views of frozen backbones (CPU, minutes; :mod:`~workflow.dual_backbone.frozen`).

Modules: :mod:`~workflow.dual_backbone.model` (branches, BatchNorms, ArcFace head, model files),
:mod:`~workflow.dual_backbone.data` (augmentations, dataset, split, sampler), :mod:`~workflow.dual_backbone.train`
(fine-tuning: schedule, loop, checkpoints), :mod:`~workflow.dual_backbone.frozen` (the frozen mode: view cache,
head, model file), :mod:`~workflow.dual_backbone.heldout` (held-out scores of the frozen mode: pseudo runs,
fold-model pair scores), :mod:`~workflow.dual_backbone.predict` (embed, retrieve, threshold, both modes) and
:mod:`~workflow.dual_backbone.cli` (the rules' entry point). Each module imports only those listed before it.

Entry point of every rule of the stage: ``python -m workflow.dual_backbone train|predict|embed|pairs``.
Inputs: ``results/data/<dataset>.tsv`` (``pairs``: also a shortlist). Outputs: ``train``: the model file
(``.pt``: backbone specs, head settings, identities, weights) and the training history (``.tsv``); ``predict``:
``predictions.tsv`` (``image_id, identity, top_identity, top_score``), ``threshold.json``,
``threshold_curve.tsv``, ``pseudo.parquet`` and optionally the embeddings (``.npz``); ``embed``: the embeddings
of every image (``.npz``, the shortlist's ``trained`` backbone); ``pairs``: ``query, candidate, score`` of the
shortlist pairs (``.parquet``, the fusion's ``trained`` source).
"""

from workflow.dual_backbone.data import (
    DEFAULT_AUGMENT,
    PAPER_AUGMENT,
    GrabCutBackground,
    ImageDataset,
    build_eval_transform,
    build_train_transform,
    make_sampler,
    resolve_augment,
    stratified_split,
    warm_background,
)
from workflow.dual_backbone.model import ArcFaceHead, DualBackbone, load_model, save_model
from workflow.dual_backbone.predict import confidence_scorer, embed, predict, predict_dataset, retrieve
from workflow.dual_backbone.train import (
    CHECKPOINT_NAME,
    DEFAULT_EPOCHS,
    DEFAULT_TRAINING,
    EpochPlan,
    evaluate_accuracy,
    phase_schedule,
    resolve_epochs,
    set_trainable,
    train,
    train_dataset,
)

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_AUGMENT",
    "DEFAULT_EPOCHS",
    "DEFAULT_TRAINING",
    "PAPER_AUGMENT",
    "ArcFaceHead",
    "DualBackbone",
    "EpochPlan",
    "GrabCutBackground",
    "ImageDataset",
    "build_eval_transform",
    "build_train_transform",
    "confidence_scorer",
    "embed",
    "evaluate_accuracy",
    "load_model",
    "make_sampler",
    "phase_schedule",
    "predict",
    "predict_dataset",
    "resolve_augment",
    "resolve_epochs",
    "retrieve",
    "save_model",
    "set_trainable",
    "stratified_split",
    "train",
    "train_dataset",
    "warm_background",
]
