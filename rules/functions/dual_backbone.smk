# Keys, paths and input functions of the dual-backbone stage's rules (rules/dual_backbone.smk, which includes this file first).
from workflow.keys import param_key

# Reserved name of the dual-backbone model's own embedding (shortlist.backbone) and similarity (a fusion source).
TRAINED = "trained"


if TRAINED in config["backbones"]:
    raise WorkflowError(
        f"backbones.{TRAINED} is reserved for the dual-backbone model's embedding: rename that backbone"
    )


def trained_pairs_key(dataset):
    return param_key(
        "trained_pairs", dual_backbone_key(dataset), shortlist_key(dataset)
    )


def trained_pairs_path(dataset):
    return f"results/trained_pairs/{dataset}/{TRAINED}/{trained_pairs_key(dataset)}.parquet"


def trained_pairs_model(wildcards):
    check_key(
        wildcards,
        trained_pairs_key(wildcards.dataset),
        f"trained pair scores {wildcards.dataset}",
    )
    return dual_backbone_file(wildcards.dataset, "model.pt")


def dual_backbone_setting(section, dataset, default):
    """``dual_backbone.<section>`` for one dataset: ``{dataset: value, default: value}`` or one mapping for all."""
    value = config["dual_backbone"][section]
    if isinstance(value, dict) and (dataset in value or "default" in value):
        return value.get(dataset, value.get("default", default))
    return value if value else default


def dual_backbone_mode(wildcards=None):
    return config["dual_backbone"]["mode"]


def dual_backbone_train_conf(dataset):
    """Everything that changes the trained dual-backbone model of one dataset (not the embedding batch size).

    The frozen mode adds ``mode`` and ``frozen``; the fine-tuning mode's key is unchanged by them.
    """
    db = config["dual_backbone"]
    names = list(db["backbones"])
    if len(names) < 1:
        raise WorkflowError(
            "dual_backbone.backbones must name at least one key of backbones"
        )
    frozen = (
        {"mode": "frozen", "frozen": db["frozen"]}
        if dual_backbone_mode() == "frozen"
        else {}
    )
    return {
        **frozen,
        "backbones": [
            {k: v for k, v in backbone_conf(b).items() if k not in EMBED_RUNTIME_KEYS}
            for b in names
        ],
        "head": dual_backbone_setting("head", dataset, {}),
        "augment": dual_backbone_setting("augment", dataset, {}),
        "epochs": db["epochs"],
        "training": db["training"],
    }


def dual_backbone_key(dataset):
    weights = [backbone_weights(b) for b in config["dual_backbone"]["backbones"]]
    return param_key("dual_backbone", dual_backbone_train_conf(dataset), weights)


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


def dual_backbone_file(dataset, name):
    return f"results/dual_backbone/{dataset}/{dual_backbone_key(dataset)}/{name}"


def dual_backbone_model(wildcards):
    return dual_backbone_file(wildcards.dataset, "model.pt")
