# Keys, paths and input functions of the shortlist's rules (rules/shortlist.smk, which includes this file first).
from workflow.keys import param_key


def shortlist_backbone():
    return config["shortlist"].get("backbone", config["baseline"]["backbone"])


def shortlist_key(dataset):
    sl = config["shortlist"]
    backbone = shortlist_backbone()
    upstream = (
        dual_backbone_key(dataset) if backbone == TRAINED else embedding_key(backbone)
    )
    union = (
        [lnbnn_key(dataset), sl["lnbnn_individuals"], sl["lnbnn_images"]]
        if sl["lnbnn_individuals"] > 0
        else []
    )
    return param_key("shortlist", sl["k_query"], sl["k_gallery"], upstream, *union)


def shortlist_lnbnn(wildcards):
    """The LNBNN scores the shortlist unites with its global candidates (none without the union)."""
    if config["shortlist"]["lnbnn_individuals"] <= 0:
        return []
    return lnbnn_path(wildcards.dataset, "scores.parquet")


def shortlist_path(dataset, suffix=".parquet"):
    return f"results/shortlist/{dataset}/{shortlist_key(dataset)}{suffix}"


def shortlist_embeddings(wildcards):
    check_key(
        wildcards, shortlist_key(wildcards.dataset), f"shortlist {wildcards.dataset}"
    )
    if shortlist_backbone() == TRAINED:
        return dual_backbone_file(wildcards.dataset, "embeddings.npz")
    return embedding_path(wildcards.dataset, shortlist_backbone())


def shortlist_input(wildcards):
    return shortlist_path(wildcards.dataset)
