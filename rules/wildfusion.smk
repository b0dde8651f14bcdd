rule shortlist:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=shortlist_embeddings,
        lnbnn=shortlist_lnbnn,
    output:
        pairs="results/shortlist/{dataset}/{key}.parquet",
    log:
        "logs/shortlist/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    threads: compute("shortlist", "threads", 1)
    resources:
        gpu=compute("shortlist", "gpu", 0),
        mem_mb=compute("shortlist", "mem_mb", 4000),
        runtime=compute("shortlist", "runtime", 60),
    params:
        k_query=config_provider("shortlist", "k_query"),
        k_gallery=config_provider("shortlist", "k_gallery"),
        lnbnn=optional_arg("--lnbnn", "lnbnn"),
        individuals=config_provider("shortlist", "lnbnn_individuals"),
        images=config_provider("shortlist", "lnbnn_images"),
        device=job_device,
    message:
        "Shortlisting the top-{params.k_query} gallery candidates of each {wildcards.dataset} image (gpu={resources.gpu})"
    shell:
        "python -m workflow.shortlist --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--k-query {params.k_query:q} --k-gallery {params.k_gallery:q} {params.lnbnn:q} "
        "--lnbnn-individuals {params.individuals:q} --lnbnn-images {params.images:q} "
        "--device {params.device:q} --threads {threads} "
        "--out {output.pairs:q} --log {log:q}"


# The shortlist's recall over the known queries: the only shortlist output that reads the answer key.
rule shortlist_recall:
    input:
        pairs="results/shortlist/{dataset}/{key}.parquet",
        metadata="results/data/{dataset}.tsv",
        solution=solution_input(),
        solution_check=solution_check(),
    output:
        recall="results/shortlist/{dataset}/{key}.recall.json",
    log:
        "logs/shortlist_recall/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    message:
        "Recall of the {wildcards.dataset} query shortlist over the known queries of the solution"
    shell:
        "python -m workflow.shortlist_recall --pairs {input.pairs:q} --metadata {input.metadata:q} "
        "--solution {input.solution:q} --out {output.recall:q} --log {log:q}"


rule extract_features:
    input:
        metadata=features_metadata,
    output:
        manifest="results/features/{dataset}/{matcher}/{key}.tsv",
    log:
        "logs/extract_features/{dataset}/{matcher}/{key}.log",
    benchmark:
        "logs/benchmarks/extract_features/{dataset}/{matcher}/{key}.tsv"
    conda:
        CONDA_ENV
    threads: compute("extract_features", "threads", 2)
    resources:
        gpu=compute("extract_features", "gpu", 0),
        mem_mb=compute("extract_features", "mem_mb", 4000),
        runtime=compute("extract_features", "runtime", 60),
    params:
        conf=matcher_json,
        cache=config_provider("cache", "features"),
        device=job_device,
    message:
        "Extracting {wildcards.matcher} local features of every {wildcards.dataset} image (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.match extract --matcher {wildcards.matcher:q} --conf {params.conf:q} "
        "--metadata {input.metadata:q} --cache {params.cache:q} --device {params.device:q} "
        "--threads {threads} --out {output.manifest:q} --log {log:q}"


rule match_shard:
    input:
        shortlist=shortlist_input,
        features=match_features,
    output:
        scores="results/matches/{dataset}/{matcher}/{key}/shard{shard}.parquet",
        cost="results/matches/{dataset}/{matcher}/{key}/shard{shard}.cost.json",
    log:
        "logs/match_shard/{dataset}/{matcher}/{key}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/match_shard/{dataset}/{matcher}/{key}/shard{shard}.tsv"
    conda:
        CONDA_ENV
    threads: compute("match_shard", "threads", 2)
    resources:
        gpu=compute("match_shard", "gpu", 0),
        mem_mb=compute("match_shard", "mem_mb", 4000),
        runtime=compute("match_shard", "runtime", 60),
    params:
        conf=matcher_json,
        n_shards=config_provider("wildfusion", "shards"),
        device=job_device,
        pair_cache=config_provider("cache", "pairs"),
        learned_pairs=config_provider("cache", "learned_pairs"),
    message:
        "Matching shard {wildcards.shard} of {wildcards.dataset} with {wildcards.matcher} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.match shard --matcher {wildcards.matcher:q} --conf {params.conf:q} "
        "--shortlist {input.shortlist:q} --features {input.features:q} --shard {wildcards.shard:q} "
        "--n-shards {params.n_shards:q} --device {params.device:q} --threads {threads} "
        "--pair-cache {params.pair_cache:q} --learned-pairs {params.learned_pairs:q} "
        "--out {output.scores:q} --cost {output.cost:q} --log {log:q}"


rule calibrate:
    input:
        metadata="results/data/{dataset}.tsv",
        shortlist=shortlist_input,
        shards=source_shards,
    output:
        calibrator="results/calibration/{dataset}/{source}/{key}.json",
    log:
        "logs/calibrate/{dataset}/{source}/{key}.log",
    conda:
        CONDA_ENV
    message:
        "Isotonic calibration of {wildcards.source} on labelled {wildcards.dataset} gallery pairs"
    shell:
        "python -m workflow.wildfusion calibrate --source {wildcards.source:q} --shards {input.shards:q} "
        "--metadata {input.metadata:q} --shortlist {input.shortlist:q} --out {output.calibrator:q} --log {log:q}"


rule wildfusion:
    input:
        metadata="results/data/{dataset}.tsv",
        shortlist=shortlist_input,
        shards=all_shards,
        calibrators=calibrators,
    output:
        predictions="results/stages/wildfusion/{dataset}/predictions.tsv",
        threshold="results/stages/wildfusion/{dataset}/threshold.json",
        curve="results/stages/wildfusion/{dataset}/threshold_curve.tsv",
        pairs="results/stages/wildfusion/{dataset}/pairs.parquet",
        pseudo="results/stages/wildfusion/{dataset}/pseudo.parquet",
    log:
        "logs/wildfusion/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        matchers=fusion_sources,
        weights=as_json(config_provider("wildfusion", "weights")),
        trained=trained_setting,
        lnbnn=lnbnn_setting,
        threshold=as_json(config_provider("thresholds", "wildfusion")),
        tuning=as_json(config_provider("threshold_tuning")),
    message:
        "WildFusion: calibrated fusion of cosine and {params.matchers} on {wildcards.dataset}"
    shell:
        "python -m workflow.wildfusion fuse --matchers {params.matchers:q} --shards {input.shards:q} "
        "--calibrators {input.calibrators:q} --weights {params.weights:q} --dataset {wildcards.dataset:q} "
        "--metadata {input.metadata:q} --shortlist {input.shortlist:q} "
        "--threshold {params.threshold:q} --tuning {params.tuning:q} --trained {params.trained:q} --lnbnn {params.lnbnn:q} "
        "--predictions {output.predictions:q} --threshold-out {output.threshold:q} --curve {output.curve:q} "
        "--pairs-out {output.pairs:q} --pseudo {output.pseudo:q} --log {log:q}"
