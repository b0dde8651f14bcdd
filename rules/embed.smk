include: "functions/embed.smk"


rule embed:
    input:
        metadata=embed_metadata,
    output:
        embeddings="results/embeddings/{dataset}/{backbone}/{key}.npz",
    log:
        "logs/embed/{dataset}/{backbone}/{key}.log",
    benchmark:
        "logs/benchmarks/embed/{dataset}/{backbone}/{key}.tsv"
    conda:
        CONDA_ENV
    threads: compute("embed", "threads", 2)
    resources:
        gpu=compute("embed", "gpu", 0),
        mem_mb=compute("embed", "mem_mb", 4000),
        runtime=compute("embed", "runtime", 60),
    params:
        backbone=backbone_json,
        cache=config_provider("cache", "embeddings"),
        device=job_device,
    message:
        "Embedding {wildcards.dataset} with backbone {wildcards.backbone} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.embed --metadata {input.metadata:q} --backbone {params.backbone:q} "
        "--cache {params.cache:q} --device {params.device:q} --threads {threads} "
        "--out {output.embeddings:q} --log {log:q}"
