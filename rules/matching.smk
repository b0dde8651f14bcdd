include: "functions/matching.smk"


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
