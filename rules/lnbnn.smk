include: "functions/lnbnn.smk"


# One-vs-many local matching (workflow/lnbnn.py): the gallery index and the LNBNN votes of every image, then
# their score on each shortlist pair (the fusion source lnbnn).
rule lnbnn:
    input:
        metadata="results/data/{dataset}.tsv",
        features=lnbnn_features,
    output:
        index="results/lnbnn/{dataset}/{key}/index.faiss",
        scores="results/lnbnn/{dataset}/{key}/scores.parquet",
        cost="results/lnbnn/{dataset}/{key}/cost.json",
    log:
        "logs/lnbnn/{dataset}/{key}.log",
    benchmark:
        "logs/benchmarks/lnbnn/{dataset}/{key}.tsv"
    conda:
        CONDA_ENV
    threads: compute("lnbnn", "threads", 2)
    resources:
        gpu=compute("lnbnn", "gpu", 0),
        mem_mb=compute("lnbnn", "mem_mb", 8000),
        runtime=compute("lnbnn", "runtime", 60),
    params:
        conf=as_json(config_provider("lnbnn")),
        device=job_device,
    message:
        "LNBNN: one index over the {wildcards.dataset} gallery's local descriptors, votes of every image (gpu={resources.gpu}, mem_mb={resources.mem_mb})"
    shell:
        "python -m workflow.lnbnn index --metadata {input.metadata:q} --features {input.features:q} "
        "--conf {params.conf:q} --device {params.device:q} --threads {threads} --index {output.index:q} "
        "--cost {output.cost:q} --out {output.scores:q} --log {log:q}"


rule lnbnn_pairs:
    input:
        metadata="results/data/{dataset}.tsv",
        shortlist=shortlist_input,
        scores=lnbnn_pairs_scores,
    output:
        scores="results/lnbnn_pairs/{dataset}/lnbnn/{key}.parquet",
    log:
        "logs/lnbnn_pairs/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    message:
        "LNBNN score of every {wildcards.dataset} shortlist pair, fusion source lnbnn"
    shell:
        "python -m workflow.lnbnn pairs --metadata {input.metadata:q} --shortlist {input.shortlist:q} "
        "--scores {input.scores:q} --out {output.scores:q} --log {log:q}"
