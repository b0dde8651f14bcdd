"""Synthetic multi-species re-ID dataset in the AnimalCLEF 2025 layout (rule ``demo_data``).

Inputs
    The ``demo`` section of the workflow config (``seed``, ``image_size``, ``datasets``; an optional ``root``
    is ignored here), given as a YAML/JSON file or as an inline JSON string. Each dataset entry describes one
    species group (see :class:`DemoDataset`).
Outputs (under ``--out``)
    ``images/<dataset>/<split>/<image_id>.jpg``: ``image_size x image_size`` RGB JPEGs;
    ``solution.csv``: ``image_id, identity, dataset, new`` for every query image (``new`` is True where the
    individual has no database image; its identity is then its own, never seen in the database);
    ``metadata.csv``: ``image_id, identity, path, date, orientation, species, split, dataset`` (``identity``
    empty on query rows). Both tables are written atomically and last, metadata.csv last of all, so an
    interrupted run never looks finished.

The three shapes mirror Table 1 of the AnimalCLEF 2025 paper: ``longtail`` (lynx: few individuals, many
photos each, a few singletons and one individual with ~28% of the gallery), ``sparse`` (salamander: many
individuals, median one gallery photo) and ``medium`` (sea turtle: in between). About one third of each
dataset's query photos show new individuals. Every individual carries its own pattern (``spots``,
``stripes`` or a scale ``mosaic``) on a species body; every photo has its own viewpoint (consistent with its
``orientation``: ``right`` is the mirror of ``left``), scale, crop, rotation, illumination, blur, occlusion
and cluttered background. Same seed, same bytes: every random draw comes from a generator seeded by
``(seed, crc32(dataset name), purpose, index)``.

Modules: :mod:`~workflow.demo.plan` (the config entries and who is photographed how often),
:mod:`~workflow.demo.shapes` (bodies and coat patterns), :mod:`~workflow.demo.render` (one photo),
:mod:`~workflow.demo.write` (the dataset on disk) and :mod:`~workflow.demo.cli` (the rule's entry point).
"""

from workflow.demo.plan import (
    DISTRIBUTIONS,
    DOMINANT_SHARE,
    NEW_FRACTION,
    SECTION_KEYS,
    SPARSE_MAX_IMAGES,
    DemoDataset,
    demo_datasets_from_config,
    demo_settings_from_config,
    gallery_counts,
    plan_dataset,
)
from workflow.demo.render import (
    CANVAS_UNITS,
    ILLUMINATION,
    JPEG_QUALITY,
    canonical_size,
    render_canonical,
    render_individual_image,
)
from workflow.demo.shapes import PATTERNS, make_identity
from workflow.demo.write import METADATA_COLUMNS, SOLUTION_COLUMNS, generate_demo

__all__ = [
    "CANVAS_UNITS",
    "DISTRIBUTIONS",
    "DOMINANT_SHARE",
    "DemoDataset",
    "ILLUMINATION",
    "JPEG_QUALITY",
    "METADATA_COLUMNS",
    "NEW_FRACTION",
    "PATTERNS",
    "SECTION_KEYS",
    "SOLUTION_COLUMNS",
    "SPARSE_MAX_IMAGES",
    "canonical_size",
    "demo_datasets_from_config",
    "demo_settings_from_config",
    "gallery_counts",
    "generate_demo",
    "make_identity",
    "plan_dataset",
    "render_canonical",
    "render_individual_image",
]
