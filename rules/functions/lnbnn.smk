# Keys, paths and input functions of LNBNN's rules (rules/lnbnn.smk, which includes this file first).
from workflow.keys import param_key

# Reserved name of the LNBNN one-vs-many local score as a fusion source (workflow/lnbnn.py).
LNBNN = "lnbnn"


def uses_lnbnn():
    """Whether the LNBNN index is built: for the shortlist union or as a fusion source."""
    return (
        config["shortlist"]["lnbnn_individuals"] > 0
        or config["wildfusion"]["lnbnn"] is not False
    )


def lnbnn_key(dataset):
    extractor = config["lnbnn"]["extractor"]
    return param_key("lnbnn", config["lnbnn"], features_key(extractor))


def lnbnn_path(dataset, name):
    return f"results/lnbnn/{dataset}/{lnbnn_key(dataset)}/{name}"


def lnbnn_features(wildcards):
    check_key(wildcards, lnbnn_key(wildcards.dataset), f"lnbnn {wildcards.dataset}")
    return features_path(wildcards.dataset, config["lnbnn"]["extractor"])


def lnbnn_pairs_key(dataset):
    return param_key("lnbnn_pairs", lnbnn_key(dataset), shortlist_key(dataset))


def lnbnn_pairs_path(dataset):
    return f"results/lnbnn_pairs/{dataset}/{LNBNN}/{lnbnn_pairs_key(dataset)}.parquet"


def lnbnn_pairs_scores(wildcards):
    check_key(
        wildcards,
        lnbnn_pairs_key(wildcards.dataset),
        f"lnbnn pair scores {wildcards.dataset}",
    )
    return lnbnn_path(wildcards.dataset, "scores.parquet")
