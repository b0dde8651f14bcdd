# Input functions and config providers only; no logic that belongs in a stage module.
import json
import sys
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from workflow.config_check import check_config
from workflow.keys import param_key, weights_identity
from workflow.matcher_keys import extractor_identity, matching_weights_identity
from workflow.matchers import WeightsNotFoundError
from workflow.enrollment import (
    active_changes_file,
    describe_active,
    describe_line,
    find_enrollment_dir,
    locate_decisions,
    record_data,
    recover_log,
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
# Per-dataset tables (metadata rows + the sha1 of each image): the only view of the data that jobs have.
TABLES_DIR = Path("results/data")
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


def _enrollment_only():
    """Whether the command line names targets enroll, enroll_undo or enroll_redo and no other rule or file (a
    heuristic on the arguments: Snakemake sets its targets after the Snakefile is read). They check the data
    themselves (workflow/enrollment.py) and read no table, so a gallery version that the tables refuse can always
    be undone.
    """
    words = {w for w in sys.argv[1:] if not w.startswith("-") and "=" not in w}
    outputs = {w for w in words if w == "all" or w.startswith("results/")}
    return bool({"enroll", "enroll_undo", "enroll_redo"} & words) and not outputs


def _start_run():
    """What a start of the workflow does before any job (main process only, also in a dry-run).

    Removes the directory lock of a Snakemake that died (workflow/runlock.py), then validates the data and
    brings the existing tables up to date, rewriting a table only when its content changes (a replaced or
    truncated image changes its sha1). Bad data stops here: no job starts, nothing is deleted.
    Returns the datasets whose tables rule validate_data builds (one job for all of them, so that no job opens
    an image before every dataset passed): those without a table, or every dataset of the demo (generated data).
    """
    if not workflow.is_main_process:
        return list(DATASETS)
    from workflow.data import DataValidationError
    from workflow.runlock import release_stale_locks
    from workflow.tables import sync_tables

    removed = release_stale_locks()
    # a gallery switch whose log line a killed enroll/undo/redo did not write (workflow/enrollment.py)
    recover_log(ENROLLMENT_DIR)
    record_data(
        ENROLLMENT_DIR, DATA_ROOT
    )  # the data's identity, so that a moved copy finds its versions
    if not _FOUND_BY.startswith("its real path"):
        logger.warning(
            f"Gallery versions of {DATA_ROOT} found in {ENROLLMENT_DIR} by {_FOUND_BY}"
        )
    logger.info(GALLERY_LINE)
    if DEMO_OVERLAY:
        logger.info(
            "Demo data: config/demo.yaml is applied on top of config/config.yaml (its keys win there; "
            "--config and --configfile still win over both)"
        )
    if removed:
        logger.warning(
            f"Removed the directory lock left by a Snakemake run that is no longer alive ({len(removed)} "
            "lock file(s) in .snakemake/locks); resuming."
        )
    if not (DATA_ROOT / "metadata.csv").is_file():  # the demo, before it is generated
        return list(DATASETS)
    if _enrollment_only():
        return []
    present = [d for d in DATASETS if (TABLES_DIR / f"{d}.tsv").is_file()]
    # With a gallery version active (workflow/enrollment.py) every table is written here, through it; rule
    # validate_data (which reads metadata.csv alone) then only rebuilds tables after the demo is regenerated.
    try:
        changed = sync_tables(
            DATA_ROOT,
            TABLES_DIR,
            DATASETS if ENROLLMENT else present,
            config["data"]["extra_required_columns"],
            threads=min(8, os.cpu_count() or 1),
            allow_external_symlinks=config["data"]["allow_external_symlinks"],
            enrollment=ENROLLMENT,
            discovery=DISCOVERY,
            warn=lambda line: logger.warning(f"Warning: {line}"),
        )
    except DataValidationError as err:
        raise WorkflowError(
            f"{err}\nFix these and start again: no job was started and nothing was deleted."
        ) from None
    if changed:
        logger.info(
            f"Data changed: rewrote {', '.join(f'{TABLES_DIR}/{d}.tsv' for d in changed)}"
        )
    if IS_DEMO:
        return list(DATASETS)
    return [d for d in DATASETS if not (TABLES_DIR / f"{d}.tsv").is_file()]


TABLES_TO_BUILD = _start_run()


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


# Parameter-addressed outputs: every expensive output lives under a short hash ({key}) of exactly the
# config values (and the keys of the upstream outputs) that affect it, so editing one parameter reruns
# only what depends on it and reverting it finds the earlier files again. Stage outputs
# (results/stages/...) are cheap and stay unkeyed.
# (param_key: workflow/keys.py, the one hasher of keyed outputs and caches.)


def check_key(wildcards, expected, what):
    """Refuse to build a keyed output whose key is not that of the current config."""
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
