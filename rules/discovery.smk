# Discovery (AnimalCLEF 2026): the query photos the label stage called new_individual are grouped into new
# individuals; requested by final_outputs() when "discovery" is listed in stages.


include: "functions/discovery.smk"


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
# (rules/functions/discovery.smk) give it the other datasets' calibrators.json and threshold.json instead.
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
