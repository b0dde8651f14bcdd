# Input functions and config providers only; no logic that belongs in a stage module.
import json
from pathlib import Path

import pandas as pd
from snakemake.exceptions import WorkflowError

DATA_ROOT = Path(config["data_root"])
DEMO_ROOT = Path(config["demo"]["root"])
IS_DEMO = DATA_ROOT.resolve() == DEMO_ROOT.resolve()
# Software environment of every rule with --use-conda (envs/cpu.yaml or envs/cuda.yaml).
CONDA_ENV = f"../envs/{config['conda_env']}.yaml"


wildcard_constraints:
    dataset=r"[^/]+",
    backbone=r"[A-Za-z0-9_.-]+",
    stage=r"[A-Za-z0-9_]+",
    matcher=r"[A-Za-z0-9_.-]+",
    source=r"[A-Za-z0-9_.-]+",
    shard=r"\d+",


def _read_datasets():
    """Dataset names (the ``dataset`` column), each processed as its own species group."""
    if IS_DEMO:
        return sorted(d["name"] for d in config["demo"]["datasets"])
    meta = DATA_ROOT / "metadata.csv"
    if not meta.is_file():
        raise WorkflowError(
            f"{meta} does not exist: set data_root to a folder in the AnimalCLEF 2025 layout "
            "(metadata.csv + images), e.g. --config data_root=PATH"
        )
    table = pd.read_csv(meta, dtype=str, keep_default_na=False)
    if "dataset" not in table.columns or (table["dataset"] == "").all():
        from workflow.data import validate_dataset

        validate_dataset(
            DATA_ROOT, check_files=False
        )  # raises with every problem listed
    return sorted(table.loc[table["dataset"] != "", "dataset"].unique())


DATASETS = _read_datasets()
HAS_SOLUTION = IS_DEMO or (DATA_ROOT / "solution.csv").is_file()
STAGES = list(config["stages"])


def config_provider(*keys, default=None):
    """A params function returning ``config[k1][k2]...`` (Snakemake reruns the rule when it changes)."""

    def provider(wildcards=None):
        value = config
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value

    return provider


def as_json(provider):
    """Wrap a provider so the rule receives its value as one JSON string (sorted keys)."""

    def wrapped(wildcards=None):
        return json.dumps(provider(wildcards), sort_keys=True)

    return wrapped


def backbone_json(wildcards):
    if wildcards.backbone not in config["backbones"]:
        raise WorkflowError(
            f"unknown backbone {wildcards.backbone!r}; configured: {sorted(config['backbones'])}"
        )
    return json.dumps(config["backbones"][wildcards.backbone], sort_keys=True)


def matcher_json(wildcards):
    if wildcards.matcher not in config["wildfusion"]["matchers"]:
        raise WorkflowError(
            f"matcher {wildcards.matcher!r} is not in wildfusion.matchers {config['wildfusion']['matchers']}"
        )
    return json.dumps(
        config.get("matchers", {}).get(wildcards.matcher, {}), sort_keys=True
    )


def shortlist_embeddings(wildcards):
    backbone = config["shortlist"].get("backbone", config["baseline"]["backbone"])
    return f"results/embeddings/{wildcards.dataset}/{backbone}.npz"


def matcher_shards(dataset, matcher):
    return expand(
        "results/matches/{dataset}/{matcher}/shard{shard}.parquet",
        dataset=dataset,
        matcher=matcher,
        shard=range(config["wildfusion"]["shards"]),
    )


def source_shards(wildcards):
    """Shards of one calibration source (none for the global cosine)."""
    if wildcards.source == "cosine":
        return []
    return matcher_shards(wildcards.dataset, wildcards.source)


def all_shards(wildcards):
    return [
        s
        for m in config["wildfusion"]["matchers"]
        for s in matcher_shards(wildcards.dataset, m)
    ]


def xgboost_backbones(wildcards=None):
    """Backbones whose embeddings XGBoost concatenates (default: the baseline's)."""
    return list(
        config.get("xgboost", {}).get("backbones") or [config["baseline"]["backbone"]]
    )


def xgboost_embeddings(wildcards):
    for name in xgboost_backbones():
        if name not in config["backbones"]:
            raise WorkflowError(
                f"xgboost.backbones names {name!r}; configured backbones: {sorted(config['backbones'])}"
            )
    return expand(
        "results/embeddings/{dataset}/{backbone}.npz",
        dataset=wildcards.dataset,
        backbone=xgboost_backbones(),
    )


def xgboost_train_conf(wildcards=None):
    """The xgboost section without the keys that only the gate reads (so they do not retrain the model)."""
    return {
        k: v
        for k, v in config.get("xgboost", {}).items()
        if k not in ("base_stage", "backbones")
    }


# Column of a pair stage's pairs.parquet that holds its final score.
PAIR_STAGE_SCORE = {"wildfusion": "fused", "rerank": "rerank"}


def xgboost_base_stage():
    return config.get("xgboost", {}).get("base_stage", "wildfusion")


def xgboost_base(name):
    """An output file of the stage that the XGBoost gate overrides."""

    def inner(wildcards):
        return f"results/stages/{xgboost_base_stage()}/{wildcards.dataset}/{name}"

    return inner


def xgboost_score_column(wildcards=None):
    return PAIR_STAGE_SCORE[xgboost_base_stage()]


def calibrators(wildcards):
    """Calibrators in the order the fusion expects: cosine first, then the configured matchers."""
    return expand(
        "results/calibration/{dataset}/{source}.json",
        dataset=wildcards.dataset,
        source=["cosine", *config["wildfusion"]["matchers"]],
    )


def compute(rule_name, key, default):
    """Resource settings of a rule from ``config['compute'][rule]`` (GPU, memory, runtime, threads)."""
    return config.get("compute", {}).get(rule_name, {}).get(key, default)


def metadata_input():
    """The dataset's metadata (and, for the demo, the rule that generates it)."""
    return DATA_ROOT / "metadata.csv"


def solution_input():
    return [str(DATA_ROOT / "solution.csv")] if HAS_SOLUTION else []


def dataset_tables(wildcards=None):
    return expand("results/data/{dataset}.tsv", dataset=DATASETS)


def stage_predictions(wildcards):
    return expand(
        "results/stages/{stage}/{dataset}/predictions.tsv",
        stage=wildcards.stage,
        dataset=DATASETS,
    )


def final_outputs():
    return [
        "results/submission.csv",
        "results/scores.tsv",
    ]
