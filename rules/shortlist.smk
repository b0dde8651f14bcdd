include: "functions/shortlist.smk"


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
