# What every stage needs: the datasets, the gallery version, the config provider, the key check, resources and the
# final outputs. Each stage's keys, paths and input functions: rules/functions/<stage>.smk (its rule file includes it).
import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from workflow.config_check import check_config
from workflow.enrollment import (
    active_changes_file,
    describe_active,
    describe_line,
    find_enrollment_dir,
)
from workflow.data import (
    SAFE_NAME,
    DataValidationError,
    dataset_name_problem,
    read_dataset_names,
    read_gallery_free,
    read_gallery_sizes,
)

DATA_ROOT = Path(config["data_root"])
DEMO_ROOT = Path(config["demo"]["root"])
IS_DEMO = DATA_ROOT.resolve() == DEMO_ROOT.resolve()
# Software environment of every rule with --use-conda (envs/cpu.yaml or envs/cuda.yaml).
CONDA_ENV = f"../envs/{config['conda_env']}.yaml"


wildcard_constraints:
    dataset=SAFE_NAME,
    backbone=r"[A-Za-z0-9_.-]+",
    stage=r"[A-Za-z0-9_]+",
    matcher=r"[A-Za-z0-9_.-]+",
    source=r"[A-Za-z0-9_.-]+",
    shard=r"\d+",


def _read_datasets():
    """Dataset names (the ``dataset`` column), each processed as its own species group.

    Checked here, when the Snakefile is parsed, so that a name unsafe as a folder or shell argument (or an
    unreadable metadata.csv) stops the workflow before any job starts.
    """
    if IS_DEMO:
        names = sorted(d["name"] for d in config["demo"]["datasets"])
        for name in names:
            if dataset_name_problem(name):
                raise WorkflowError(
                    f"demo.datasets: name {name!r} {dataset_name_problem(name)}"
                )
        return names
    meta = DATA_ROOT / "metadata.csv"
    if not meta.is_file():
        raise WorkflowError(
            f"{meta} does not exist: set data_root to a folder in the AnimalCLEF 2025 layout "
            "(metadata.csv + images), e.g. --config data_root=PATH"
        )
    try:
        return read_dataset_names(DATA_ROOT)
    except DataValidationError as err:
        raise WorkflowError(str(err)) from None


DATASETS = _read_datasets()
# Discovery (rules/discovery.smk): query x query pairs, their matching shards and the clustering inputs.
DISCOVERY = "discovery" in config["stages"]


def _read_gallery_free():
    """Datasets without a gallery (every row a query): the demo's with known_individuals 0, else from the data."""
    if IS_DEMO:
        return sorted(
            d["name"]
            for d in config["demo"]["datasets"]
            if d.get("known_individuals") == 0
        )
    return read_gallery_free(DATA_ROOT)


# Datasets without a gallery: only discovery runs on them (the stages that need identities skip them).
GALLERY_FREE = _read_gallery_free()
if GALLERY_FREE and not DISCOVERY:
    raise WorkflowError(
        f"dataset(s) {GALLERY_FREE} have no gallery (no database rows): only the discovery stage can group their "
        "query images into individuals. Enable discovery (add discovery to stages, e.g. "
        "--config stages='[baseline, wildfusion, rerank, dual_backbone, cascade, discovery]'), or add database "
        "rows for them, or remove their rows from metadata.csv."
    )
# Datasets with a gallery: those that the per-query stages (baseline ... cascade) identify and score.
IDENTIFIED = [d for d in DATASETS if d not in GALLERY_FREE]
if GALLERY_FREE:
    logger.info(
        f"No gallery: {', '.join(GALLERY_FREE)} (only discovery runs on them, clustering their query images "
        "from scratch; every one of their queries is new_individual in results/submission.csv)"
    )


def has_gallery(dataset):
    return dataset not in GALLERY_FREE


def _gallery_sizes():
    """Individuals in each dataset's gallery (the demo's from its config)."""
    if IS_DEMO:
        return {d["name"]: d["known_individuals"] for d in config["demo"]["datasets"]}
    return read_gallery_sizes(DATA_ROOT)


# Per-dataset keys, cascade sources, backbone references and auto decisions against this data
# (workflow/config_check.py).
check_config(
    config,
    Path(workflow.basedir) / "config" / "schema.yaml",
    datasets=DATASETS,
    warn=lambda line: print(f"Warning: {line}", file=sys.stderr),
    gallery_sizes=_gallery_sizes(),
)
HAS_SOLUTION = IS_DEMO or (DATA_ROOT / "solution.csv").is_file()
# Stages with per-query predictions; discovery (clusters, rules/discovery.smk) is listed in stages but scored apart.
STAGES = [stage for stage in config["stages"] if stage != "discovery"]

# Gallery versions written by target enroll (workflow/enrollment.py): the data is read through the active one.
# They are found by the data's real path (or the fingerprint of its metadata.csv), not by the data_root string.
_ENROLLMENT_DIR, _FOUND_BY = find_enrollment_dir(
    config["review"]["enrollment_dir"], DATA_ROOT
)
ENROLLMENT_DIR = str(_ENROLLMENT_DIR)
ENROLLMENT = active_changes_file(ENROLLMENT_DIR)


# The active gallery version (results/gallery_version.json, the start line, the review pages, the report's
# captions of the scores: a param of their rules, so that they rerun when it changes).
GALLERY = describe_active(ENROLLMENT_DIR)
GALLERY_LINE = describe_line(GALLERY)
# the same without the enrollment folder: the param of the jobs that show it (a moved data folder reruns none)
GALLERY_VERSION_LINE = describe_line(GALLERY, where=False)


def config_provider(*keys):
    """A params function returning ``config[k1][k2]...`` (Snakemake reruns the rule when it changes).

    Defaults live in config/schema.yaml only: validate() in the Snakefile fills them before any rule reads them.
    """

    def provider(wildcards=None):
        value = config
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise WorkflowError(
                    f"config key {'.'.join(keys[: depth + 1])} is not set and config/schema.yaml gives no default: "
                    "add it to the config"
                )
            value = value[key]
        return value

    return provider


def as_json(provider):
    """Wrap a provider so the rule receives its value as one JSON string (sorted keys)."""

    def wrapped(wildcards=None):
        return json.dumps(provider(wildcards), sort_keys=True)

    return wrapped


def check_key(wildcards, expected, what):
    """The key check of every keyed output: refuse to build ``{key}`` unless it is that of the current config.

    Parameter-addressed outputs: every expensive output lives under a short hash ({key}) of exactly the config
    values (and the keys of the upstream outputs) that affect it (workflow/keys.py's param_key), so editing one
    parameter reruns only what depends on it and reverting it finds the earlier files again. Each stage's input
    function of a keyed rule calls this first (e.g. embed_metadata in rules/functions/embed.smk). Stage outputs
    (results/stages/...) are cheap and stay unkeyed.
    """
    if wildcards.key != expected:
        raise WorkflowError(
            f"{what}: key {wildcards.key} is not that of the current config ({expected}); "
            "keyed outputs are only built for the current parameters"
        )


def job_device(wildcards, resources):
    """The device a job runs its models on, from the GPU it was given: ``cpu`` unless its ``gpu`` resource is
    above 0 (config ``device: cpu`` forces the CPU everywhere); on a GPU job ``cuda`` (config ``device: cuda``,
    fails without CUDA) or ``auto`` (CUDA when the job sees it, else the CPU)."""
    if config["device"] == "cpu" or int(getattr(resources, "gpu", 0) or 0) <= 0:
        return "cpu"
    return "cuda" if config["device"] == "cuda" else "auto"


def compute(rule_name, key, default):
    """Resource settings of a rule from ``config['compute'][rule]`` (GPU, memory, runtime, threads)."""
    return config.get("compute", {}).get(rule_name, {}).get(key, default)


def final_outputs():
    """Everything rule all requests; the per-query stages' outputs only for datasets with a gallery."""
    return [
        "results/submission.csv",
        "results/gallery_version.json",
        *(["results/scores.tsv", "results/plots/scores.html"] if IDENTIFIED else []),
        *expand(
            "results/plots/matches/{dataset}.png",
            dataset=IDENTIFIED if "wildfusion" in STAGES else [],
        ),
        *expand(
            "results/plots/new_share/{dataset}.png",
            dataset=IDENTIFIED if HAS_SOLUTION else [],
        ),
        *discovery_outputs(),
        *expand(
            "results/review/{dataset}.html",
            dataset=IDENTIFIED if "wildfusion" in STAGES else [],
        ),
        *[
            shortlist_path(dataset, ".recall.json")
            for dataset in (
                IDENTIFIED if HAS_SOLUTION and "wildfusion" in STAGES else []
            )
        ],
    ]


def optional_arg(flag, name):
    """A params function: ``[flag, file]`` for the rule's input ``name`` (a one-file list), ``[]`` when it is empty
    (an empty string quoted by ``:q`` vanishes from the command line, so the flag goes with it).
    """

    def inner(wildcards, input):
        files = [input[name]] if isinstance(input[name], str) else list(input[name])
        return [flag, files[0]] if files else []

    return inner
