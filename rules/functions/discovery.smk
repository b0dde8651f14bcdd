# Keys, paths and input functions of discovery's rules (rules/discovery.smk, which includes this file first).
from workflow.keys import param_key


def discovery_setting(key):
    return config["discovery"][key]


def discovery_backbone():
    """The global embedding of the query x query shortlist: the shortlist's (the baseline's when that is trained)."""
    backbone = shortlist_backbone()
    return config["baseline"]["backbone"] if backbone == TRAINED else backbone


def discovery_pairs_key():
    return param_key(
        "discovery_pairs",
        discovery_setting("k"),
        embedding_key(discovery_backbone()),
    )


def discovery_pairs(name):
    """``pairs.parquet`` or ``cost.json`` of the dataset's query x query shortlist."""

    def inner(wildcards):
        return f"results/discovery/{wildcards.dataset}/{discovery_pairs_key()}/{name}"

    return inner


def discovery_pairs_embeddings(wildcards):
    check_key(
        wildcards, discovery_pairs_key(), f"query x query pairs {wildcards.dataset}"
    )
    return embedding_path(wildcards.dataset, discovery_backbone())


def discovery_matchers(wildcards=None):
    return list(discovery_setting("matchers"))


def discovery_match_key(matcher):
    return param_key(
        "discovery_match",
        matcher,
        matcher_conf(matcher),
        features_key(matcher),
        discovery_pairs_key(),
        discovery_setting("shards"),
        *[w for w in matcher_weights(matcher) if w],
    )


def discovery_match_features(wildcards):
    check_key(
        wildcards,
        discovery_match_key(wildcards.matcher),
        f"query x query match shards {wildcards.dataset}/{wildcards.matcher}",
    )
    return features_path(wildcards.dataset, wildcards.matcher)


def discovery_shard_files(pattern):
    """Every query x query match shard (or its benchmark record) of the dataset's discovery.matchers."""

    def inner(wildcards):
        return [
            path
            for matcher in discovery_matchers()
            for path in expand(
                pattern,
                dataset=wildcards.dataset,
                matcher=matcher,
                key=discovery_match_key(matcher),
                shard=range(discovery_setting("shards")),
            )
        ]

    return inner


def discovery_cosine_calibration(wildcards=None):
    """``gallery``: the WildFusion cosine calibrator fits discovery's embedding; ``refit``: it does not
    (``shortlist.backbone: trained``), so discovery refits the cosine on its own embedding (gallery pairs).
    """
    return "gallery" if shortlist_backbone() == discovery_backbone() else "refit"


def discovery_calibrators(wildcards):
    """The dataset's gallery calibrators (cosine first unless refit, then discovery.matchers order); none
    without a gallery (they are pooled from the other datasets: discovery_pooled)."""
    if not has_gallery(wildcards.dataset):
        return []
    cosine = ["cosine"] if discovery_cosine_calibration() == "gallery" else []
    return [
        f"results/calibration/{wildcards.dataset}/{source}/{calibration_key(source, wildcards.dataset)}.json"
        for source in [*cosine, *discovery_matchers()]
    ]


def discovery_pooled(name):
    """Without a gallery: ``calibrators.json`` or ``threshold.json`` of every dataset with one (pooled)."""

    def inner(wildcards):
        if has_gallery(wildcards.dataset):
            return []
        return expand(
            "results/stages/discovery/{dataset}/{name}", dataset=IDENTIFIED, name=name
        )

    return inner


def discovery_gallery_pairs(wildcards):
    """WildFusion's pair table (its gallery pairs tune the threshold); none without a gallery."""
    if not has_gallery(wildcards.dataset):
        return []
    return f"results/stages/wildfusion/{wildcards.dataset}/pairs.parquet"


def discovery_embeddings(wildcards):
    """Discovery's global embedding (its query x query shortlist's): dense cosine, refit and rank fallback."""
    return embedding_path(wildcards.dataset, discovery_backbone())


def discovery_labels(wildcards):
    """The label stage's predictions (anchors); none without a gallery (every query is new)."""
    if not has_gallery(wildcards.dataset):
        return []
    return f"results/stages/{discovery_setting('stage')}/{wildcards.dataset}/predictions.tsv"


def discovery_outputs():
    if not DISCOVERY:
        return []
    plots = expand(
        "results/plots/discovery/{dataset}.png",
        dataset=DATASETS if HAS_SOLUTION else [],
    )
    pages = expand("results/review/discovery/{dataset}.html", dataset=DATASETS)
    return ["results/clusters.csv", "results/discovery_scores.tsv", *plots, *pages]
