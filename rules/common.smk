# Input functions and config providers only; no logic that belongs in a stage module.
import hashlib
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


# Parameter-addressed outputs: every expensive output lives under a short hash ({key}) of exactly the
# config values (and the keys of the upstream outputs) that affect it, so editing one parameter reruns
# only what depends on it and reverting it finds the earlier files again. Stage outputs
# (results/stages/...) are cheap and stay unkeyed.
KEY_LENGTH = 10
# Backbone options that change how fast embeddings are computed, not what they are.
EMBED_RUNTIME_KEYS = ("batch_size",)


def param_key(*parts):
    """First KEY_LENGTH hex digits of the SHA-1 of ``parts`` as sorted, compact JSON."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:KEY_LENGTH]


def check_key(wildcards, expected, what):
    """Refuse to build a keyed output whose key is not that of the current config."""
    if wildcards.key != expected:
        raise WorkflowError(
            f"{what}: key {wildcards.key} is not that of the current config ({expected}); "
            "keyed outputs are only built for the current parameters"
        )


def backbone_conf(backbone):
    if backbone not in config["backbones"]:
        raise WorkflowError(
            f"unknown backbone {backbone!r}; configured: {sorted(config['backbones'])}"
        )
    return config["backbones"][backbone]


def backbone_json(wildcards):
    return json.dumps(backbone_conf(wildcards.backbone), sort_keys=True)


def embedding_key(backbone):
    conf = {
        k: v for k, v in backbone_conf(backbone).items() if k not in EMBED_RUNTIME_KEYS
    }
    return param_key("embed", backbone, conf)


def embedding_path(dataset, backbone):
    return f"results/embeddings/{dataset}/{backbone}/{embedding_key(backbone)}.npz"


def embed_metadata(wildcards):
    check_key(
        wildcards,
        embedding_key(wildcards.backbone),
        f"embeddings {wildcards.dataset}/{wildcards.backbone}",
    )
    return f"results/data/{wildcards.dataset}.tsv"


def matcher_conf(matcher):
    if matcher not in config["wildfusion"]["matchers"]:
        raise WorkflowError(
            f"matcher {matcher!r} is not in wildfusion.matchers {config['wildfusion']['matchers']}"
        )
    return config.get("matchers", {}).get(matcher, {})


def matcher_json(wildcards):
    return json.dumps(matcher_conf(wildcards.matcher), sort_keys=True)


def shortlist_backbone():
    return config["shortlist"].get("backbone", config["baseline"]["backbone"])


def shortlist_key():
    sl = config["shortlist"]
    return param_key(
        "shortlist",
        sl.get("k_query"),
        sl.get("k_gallery"),
        embedding_key(shortlist_backbone()),
    )


def shortlist_path(dataset, suffix=".parquet"):
    return f"results/shortlist/{dataset}/{shortlist_key()}{suffix}"


def shortlist_embeddings(wildcards):
    check_key(wildcards, shortlist_key(), f"shortlist {wildcards.dataset}")
    return embedding_path(wildcards.dataset, shortlist_backbone())


def shortlist_input(wildcards):
    return shortlist_path(wildcards.dataset)


def features_key(matcher):
    return param_key("features", matcher, matcher_conf(matcher))


def features_path(dataset, matcher):
    return f"results/features/{dataset}/{matcher}/{features_key(matcher)}.tsv"


def features_metadata(wildcards):
    check_key(
        wildcards,
        features_key(wildcards.matcher),
        f"features {wildcards.dataset}/{wildcards.matcher}",
    )
    return f"results/data/{wildcards.dataset}.tsv"


def match_key(matcher):
    return param_key(
        "match",
        matcher,
        matcher_conf(matcher),
        features_key(matcher),
        shortlist_key(),
        config["wildfusion"]["shards"],
    )


def match_features(wildcards):
    check_key(
        wildcards,
        match_key(wildcards.matcher),
        f"match shards {wildcards.dataset}/{wildcards.matcher}",
    )
    return features_path(wildcards.dataset, wildcards.matcher)


def matcher_shards(dataset, matcher):
    return expand(
        "results/matches/{dataset}/{matcher}/{key}/shard{shard}.parquet",
        dataset=dataset,
        matcher=matcher,
        key=match_key(matcher),
        shard=range(config["wildfusion"]["shards"]),
    )


def calibration_key(source):
    upstream = shortlist_key() if source == "cosine" else match_key(source)
    return param_key("calibrate", source, upstream)


def source_shards(wildcards):
    """Shards of one calibration source (none for the global cosine)."""
    check_key(
        wildcards,
        calibration_key(wildcards.source),
        f"calibrator {wildcards.dataset}/{wildcards.source}",
    )
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
    return [embedding_path(wildcards.dataset, name) for name in xgboost_backbones()]


def xgboost_train_conf(wildcards=None):
    """The xgboost section without the keys that only the gate reads (so they do not retrain the model)."""
    return {
        k: v
        for k, v in config.get("xgboost", {}).items()
        if k not in ("base_stage", "backbones")
    }


def xgboost_key():
    """The model's key: its training parameters and the keys of the embeddings it concatenates."""
    backbones = xgboost_backbones()
    return param_key(
        "xgboost",
        xgboost_train_conf(),
        backbones,
        [embedding_key(b) for b in backbones],
    )


def xgboost_model(name):
    """An output file of the current XGBoost model (``model.ubj`` or ``model.json``)."""

    def inner(wildcards):
        return f"results/xgboost/{wildcards.dataset}/{xgboost_key()}/{name}"

    return inner


def xgboost_train_embeddings(wildcards):
    check_key(wildcards, xgboost_key(), f"xgboost model {wildcards.dataset}")
    return xgboost_embeddings(wildcards)


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


def dual_backbone_setting(section, dataset, default):
    """``dual_backbone.<section>`` for one dataset: ``{dataset: value, default: value}`` or one mapping for all."""
    value = config.get("dual_backbone", {}).get(section, {})
    if isinstance(value, dict) and (dataset in value or "default" in value):
        return value.get(dataset, value.get("default", default))
    return value if value else default


def dual_backbone_train_conf(dataset):
    """Everything that changes the trained dual-backbone model of one dataset (not the embedding batch size)."""
    db = config.get("dual_backbone", {})
    names = list(db.get("backbones", []))
    if len(names) < 1:
        raise WorkflowError(
            "dual_backbone.backbones must name at least one key of backbones"
        )
    return {
        "backbones": [
            {k: v for k, v in backbone_conf(b).items() if k not in EMBED_RUNTIME_KEYS}
            for b in names
        ],
        "head": dual_backbone_setting("head", dataset, {}),
        "augment": dual_backbone_setting("augment", dataset, {}),
        "epochs": db.get("epochs", {}),
        "training": db.get("training", {}),
    }


def dual_backbone_key(dataset):
    return param_key("dual_backbone", dual_backbone_train_conf(dataset))


def dual_backbone_param(name):
    """A params function: one part of the dataset's training configuration as JSON."""

    def inner(wildcards):
        return json.dumps(
            dual_backbone_train_conf(wildcards.dataset)[name], sort_keys=True
        )

    return inner


def dual_backbone_train_metadata(wildcards):
    check_key(
        wildcards,
        dual_backbone_key(wildcards.dataset),
        f"dual-backbone model {wildcards.dataset}",
    )
    return f"results/data/{wildcards.dataset}.tsv"


def dual_backbone_model(wildcards):
    return f"results/dual_backbone/{wildcards.dataset}/{dual_backbone_key(wildcards.dataset)}/model.pt"


# Source stages that write pseudo.parquet (their predictions on the simulated open-set splits of the gallery),
# the candidates of ``cascade: auto``.
PSEUDO_SOURCES = ("baseline", "wildfusion", "rerank", "xgboost")


def cascade_steps(wildcards):
    """The dataset's cascade: ``cascade.<dataset>``, else ``cascade.default``, else a clear error.

    A list of steps, or ``auto`` (chosen on the gallery by workflow/cascade_auto.py). A ``null`` entry counts
    as absent (``default: null`` in an overlay removes the shipped default).
    """
    steps = {
        name: value
        for name, value in config.get("cascade", {}).items()
        if value is not None
    }
    if wildcards.dataset in steps:
        return steps[wildcards.dataset]
    if "default" in steps:
        return steps["default"]
    raise WorkflowError(
        f"stage cascade: no steps for dataset {wildcards.dataset!r}: add a list of steps (or auto) under "
        f"cascade.{wildcards.dataset} (or cascade.default) to the config; configured: {sorted(steps)}"
    )


def cascade_is_auto(wildcards):
    return cascade_steps(wildcards) == "auto"


def cascade_sources(wildcards):
    """Sources of the dataset's cascade: those its steps name, or for auto every stage run that writes pseudo.parquet."""
    if cascade_is_auto(wildcards):
        sources = [s for s in PSEUDO_SOURCES if s in STAGES]
        if not sources:
            raise WorkflowError(
                f"cascade: auto needs at least one of the stages {list(PSEUDO_SOURCES)} in stages; got {STAGES}"
            )
        return sources
    return sorted({step["source"] for step in cascade_steps(wildcards)})


def cascade_inputs(wildcards):
    """Predictions and threshold.json (auto: pseudo.parquet) of every source stage of the dataset's cascade."""
    names = (
        "predictions.tsv",
        "pseudo.parquet" if cascade_is_auto(wildcards) else "threshold.json",
    )
    files = {}
    for source in cascade_sources(wildcards):
        for name in names:
            files[f"{source}_{name.split('.')[0]}"] = (
                f"results/stages/{source}/{wildcards.dataset}/{name}"
            )
    return files


def cascade_source_args(kind):
    """``NAME=PATH`` arguments of the cascade entry point (kind: predictions, threshold or pseudo)."""

    def inner(wildcards, input):
        return [
            f"{source}={input[f'{source}_{kind}']}"
            for source in cascade_sources(wildcards)
            if f"{source}_{kind}" in input.keys()
        ]

    return inner


def calibrators(wildcards):
    """Calibrators in the order the fusion expects: cosine first, then the configured matchers."""
    return [
        f"results/calibration/{wildcards.dataset}/{source}/{calibration_key(source)}.json"
        for source in ["cosine", *config["wildfusion"]["matchers"]]
    ]


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
        "results/plots/scores.html",
        *expand(
            "results/plots/matches/{dataset}.png",
            dataset=DATASETS if "wildfusion" in STAGES else [],
        ),
        *expand(
            "results/plots/new_share/{dataset}.png",
            dataset=DATASETS if HAS_SOLUTION else [],
        ),
    ]
