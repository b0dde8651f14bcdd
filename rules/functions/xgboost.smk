# Keys, paths and input functions of XGBoost's rules (rules/xgboost.smk, which includes this file first).
from workflow.keys import param_key
from workflow.stages import PAIR_STAGES


def xgboost_backbones(wildcards=None):
    """Backbones whose embeddings XGBoost concatenates (default: the baseline's)."""
    return list(config["xgboost"]["backbones"] or [config["baseline"]["backbone"]])


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
        for k, v in config["xgboost"].items()
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


def xgboost_base_stage():
    return config["xgboost"]["base_stage"]


def xgboost_base(name):
    """An output file of the stage that the XGBoost gate overrides."""

    def inner(wildcards):
        return f"results/stages/{xgboost_base_stage()}/{wildcards.dataset}/{name}"

    return inner


def xgboost_score_column(wildcards=None):
    """The column of the base stage's pairs.parquet that holds its final score (the stage registry's)."""
    return PAIR_STAGES[xgboost_base_stage()]
