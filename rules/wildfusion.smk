rule shortlist:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=shortlist_embeddings,
        solution=solution_input(),
    output:
        pairs="results/shortlist/{dataset}/{key}.parquet",
        recall="results/shortlist/{dataset}/{key}.recall.json",
    log:
        "logs/shortlist/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    params:
        k_query=config_provider("shortlist", "k_query"),
        k_gallery=config_provider("shortlist", "k_gallery"),
    message:
        "Shortlisting the top-{params.k_query} gallery candidates of each {wildcards.dataset} image"
    shell:
        "python -m workflow.shortlist --metadata {input.metadata} --embeddings {input.embeddings} "
        "--k-query {params.k_query} --k-gallery {params.k_gallery} --solution '{input.solution}' "
        "--out {output.pairs} --recall {output.recall} --log {log}"


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
        device=config_provider("device"),
    message:
        "Extracting {wildcards.matcher} local features of every {wildcards.dataset} image (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.match extract --matcher {wildcards.matcher} --conf '{params.conf}' "
        "--metadata {input.metadata} --cache {params.cache} --device {params.device} "
        "--threads {threads} --out {output.manifest} --log {log}"


rule match_shard:
    input:
        shortlist=shortlist_input,
        features=match_features,
    output:
        scores="results/matches/{dataset}/{matcher}/{key}/shard{shard}.parquet",
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
        device=config_provider("device"),
    message:
        "Matching shard {wildcards.shard} of {wildcards.dataset} with {wildcards.matcher} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.match shard --matcher {wildcards.matcher} --conf '{params.conf}' "
        "--shortlist {input.shortlist} --features {input.features} --shard {wildcards.shard} "
        "--n-shards {params.n_shards} --device {params.device} --threads {threads} "
        "--out {output.scores} --log {log}"


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
        "python -m workflow.wildfusion calibrate --source {wildcards.source} --shards {input.shards} "
        "--metadata {input.metadata} --shortlist {input.shortlist} --out {output.calibrator} --log {log}"


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
        matchers=config_provider("wildfusion", "matchers"),
        weights=as_json(config_provider("wildfusion", "weights")),
        threshold=as_json(config_provider("thresholds", "wildfusion")),
        tuning=as_json(config_provider("threshold_tuning")),
    message:
        "WildFusion: calibrated fusion of cosine and {params.matchers} on {wildcards.dataset}"
    shell:
        "python -m workflow.wildfusion fuse --matchers {params.matchers} --shards {input.shards} "
        "--calibrators {input.calibrators} --weights '{params.weights}' --dataset {wildcards.dataset} "
        "--metadata {input.metadata} --shortlist {input.shortlist} "
        "--threshold '{params.threshold}' --tuning '{params.tuning}' "
        "--predictions {output.predictions} --threshold-out {output.threshold} --curve {output.curve} "
        "--pairs-out {output.pairs} --pseudo {output.pseudo} --log {log}"
