# Discovery (AnimalCLEF 2026): the query photos the label stage called new_individual are grouped into new
# individuals; requested by final_outputs() when "discovery" is listed in stages.


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


rule discovery_pairs:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=discovery_pairs_embeddings,
    output:
        pairs="results/discovery/{dataset}/{key}/pairs.parquet",
        cost="results/discovery/{dataset}/{key}/cost.json",
    log:
        "logs/discovery_pairs/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    params:
        k=config_provider("discovery", "k"),
    message:
        "Query x query shortlist of {wildcards.dataset}: the top-{params.k} other queries of each query"
    shell:
        "python -m workflow.discovery pairs --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--k {params.k:q} --out {output.pairs:q} --cost {output.cost:q} --log {log:q}"


rule discovery_match_shard:
    input:
        shortlist=discovery_pairs("pairs.parquet"),
        features=discovery_match_features,
    output:
        scores="results/discovery/{dataset}/matches/{matcher}/{key}/shard{shard}.parquet",
        cost="results/discovery/{dataset}/matches/{matcher}/{key}/shard{shard}.cost.json",
    log:
        "logs/discovery_match_shard/{dataset}/{matcher}/{key}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/discovery_match_shard/{dataset}/{matcher}/{key}/shard{shard}.tsv"
    conda:
        CONDA_ENV
    threads: compute("discovery_match_shard", "threads", 2)
    resources:
        gpu=compute("discovery_match_shard", "gpu", 0),
        mem_mb=compute("discovery_match_shard", "mem_mb", 4000),
        runtime=compute("discovery_match_shard", "runtime", 60),
    params:
        conf=matcher_json,
        n_shards=config_provider("discovery", "shards"),
        device=job_device,
        pair_cache=config_provider("cache", "pairs"),
        learned_pairs=config_provider("cache", "learned_pairs"),
    message:
        "Matching query x query shard {wildcards.shard} of {wildcards.dataset} with {wildcards.matcher} (gpu={resources.gpu})"
    shell:
        "python -m workflow.match shard --matcher {wildcards.matcher:q} --conf {params.conf:q} "
        "--shortlist {input.shortlist:q} --features {input.features:q} --shard {wildcards.shard:q} "
        "--n-shards {params.n_shards:q} --device {params.device:q} --threads {threads} "
        "--pair-cache {params.pair_cache:q} --learned-pairs {params.learned_pairs:q} "
        "--out {output.scores:q} --cost {output.cost:q} --log {log:q}"


# A dataset without a gallery has no labels, no gallery pairs and no calibrators of its own: the input functions
# (above) give it the other datasets' calibrators.json and threshold.json instead.
rule discovery:
    input:
        metadata="results/data/{dataset}.tsv",
        labels=discovery_labels,
        gallery_pairs=discovery_gallery_pairs,
        query_pairs=discovery_pairs("pairs.parquet"),
        pairs_cost=discovery_pairs("cost.json"),
        shards=discovery_shard_files(
            "results/discovery/{dataset}/matches/{matcher}/{key}/shard{shard}.parquet"
        ),
        shard_benchmarks=discovery_shard_files(
            "logs/benchmarks/discovery_match_shard/{dataset}/{matcher}/{key}/shard{shard}.tsv"
        ),
        calibrators=discovery_calibrators,
        pooled_calibrators=discovery_pooled("calibrators.json"),
        pooled_thresholds=discovery_pooled("threshold.json"),
        embeddings=discovery_embeddings,
    output:
        clusters="results/stages/discovery/{dataset}/clusters.tsv",
        threshold="results/stages/discovery/{dataset}/threshold.json",
        curve="results/stages/discovery/{dataset}/threshold_curve.tsv",
        cost="results/stages/discovery/{dataset}/cost.json",
        calibrators="results/stages/discovery/{dataset}/calibrators.json",
    log:
        "logs/discovery/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        matchers=discovery_matchers,
        weights=as_json(config_provider("wildfusion", "weights")),
        threshold=as_json(config_provider("discovery", "threshold")),
        fallback=config_provider("discovery", "fallback_threshold"),
        tuning=as_json(config_provider("threshold_tuning")),
        labels=optional_arg("--labels", "labels"),
        gallery_pairs=optional_arg("--gallery-pairs", "gallery_pairs"),
        cosine=discovery_cosine_calibration,
        dense=lambda wc: (
            ["--dense-cosine"] if discovery_setting("dense_cosine") else []
        ),
    message:
        "Discovery on {wildcards.dataset}: clustering the new photos (matchers on query pairs: {params.matchers})"
    shell:
        "python -m workflow.discovery cluster --dataset {wildcards.dataset:q} --metadata {input.metadata:q} "
        "{params.labels:q} {params.gallery_pairs:q} "
        "--query-pairs {input.query_pairs:q} --pairs-cost {input.pairs_cost:q} --embeddings {input.embeddings:q} "
        "{params.dense:q} --cosine-calibration {params.cosine:q} "
        "--matchers {params.matchers:q} --shards {input.shards:q} --shard-benchmarks {input.shard_benchmarks:q} "
        "--calibrators {input.calibrators:q} --pooled-calibrators {input.pooled_calibrators:q} "
        "--pooled-thresholds {input.pooled_thresholds:q} --fallback-threshold {params.fallback:q} "
        "--weights {params.weights:q} --threshold {params.threshold:q} --tuning {params.tuning:q} "
        "--clusters {output.clusters:q} --threshold-out {output.threshold:q} --curve {output.curve:q} "
        "--cost {output.cost:q} --calibrators-out {output.calibrators:q} --log {log:q}"


rule discovery_submission:
    input:
        clusters=expand(
            "results/stages/discovery/{dataset}/clusters.tsv", dataset=DATASETS
        ),
        metadata=dataset_tables(),
    output:
        clusters=report(
            "results/clusters.csv",
            caption="../report/clusters.rst",
            category="Submission",
        ),
    log:
        "logs/discovery_submission.log",
    conda:
        CONDA_ENV
    message:
        "Writing results/clusters.csv (image_id,cluster: the AnimalCLEF 2026 submission)"
    shell:
        "python -m workflow.discovery submission --clusters {input.clusters:q} "
        "--metadata {input.metadata:q} --out {output.clusters:q} --log {log:q}"


rule score_discovery:
    input:
        clusters=expand(
            "results/stages/discovery/{dataset}/clusters.tsv", dataset=DATASETS
        ),
        solution=solution_input(),
    output:
        scores=report(
            "results/discovery_scores.tsv",
            caption="../report/discovery_scores.rst",
            category="Discovery",
        ),
    log:
        "logs/score_discovery.log",
    conda:
        CONDA_ENV
    params:
        datasets=DATASETS,
        solution=lambda wc, input: input.solution[0] if input.solution else "",
        gallery=GALLERY_VERSION_LINE,
    message:
        "Scoring discovery (ARI, AMI) against the trivial clusterings"
    shell:
        "python -m workflow.discovery score --datasets {params.datasets:q} --clusters {input.clusters:q} "
        "--solution {params.solution:q} --out {output.scores:q} --log {log:q}"


rule plot_discovery:
    input:
        clusters="results/stages/discovery/{dataset}/clusters.tsv",
        solution=solution_input(),
    output:
        plot=report(
            "results/plots/discovery/{dataset}.png",
            caption="../report/discovery_plot.rst",
            category="Discovery",
            labels={"figure": "cluster sizes", "dataset": "{dataset}"},
        ),
    log:
        "logs/plots/discovery/{dataset}.log",
    conda:
        CONDA_ENV
    message:
        "Plotting the sizes of the discovered new individuals of {wildcards.dataset} against the truth"
    shell:
        "python -m workflow.discovery_plot --dataset {wildcards.dataset:q} --clusters {input.clusters:q} "
        "--solution {input.solution:q} --out {output.plot:q} --log {log:q}"
