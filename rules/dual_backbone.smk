include: "functions/dual_backbone.smk"


rule dual_backbone_train:
    input:
        metadata=dual_backbone_train_metadata,
    output:
        model="results/dual_backbone/{dataset}/{key}/model.pt",
        history="results/dual_backbone/{dataset}/{key}/history.tsv",
    log:
        "logs/dual_backbone_train/{dataset}/{key}.log",
    benchmark:
        "logs/benchmarks/dual_backbone_train/{dataset}/{key}.tsv"
    conda:
        CONDA_ENV
    threads: compute("dual_backbone_train", "threads", 2)
    resources:
        gpu=compute("dual_backbone_train", "gpu", 0),
        mem_mb=compute("dual_backbone_train", "mem_mb", 4000),
        runtime=compute("dual_backbone_train", "runtime", 60),
    params:
        backbones=dual_backbone_param("backbones"),
        head=dual_backbone_param("head"),
        augment=dual_backbone_param("augment"),
        epochs=dual_backbone_param("epochs"),
        training=dual_backbone_param("training"),
        checkpoint_dir="results/dual_backbone/{dataset}/{key}/checkpoint",
        device=job_device,
        mode=dual_backbone_mode,
        frozen=as_json(config_provider("dual_backbone", "frozen")),
        cache=config_provider("cache", "embeddings"),
    message:
        "Training the dual-backbone ArcFace model of {wildcards.dataset}, mode {params.mode} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.dual_backbone train --metadata {input.metadata:q} "
        "--backbones {params.backbones:q} --head {params.head:q} --augment {params.augment:q} "
        "--epochs {params.epochs:q} --training {params.training:q} "
        "--checkpoint-dir {params.checkpoint_dir:q} --model-out {output.model:q} --history {output.history:q} "
        "--device {params.device:q} --threads {threads} --log {log:q} "
        "--mode {params.mode:q} --frozen {params.frozen:q} --cache {params.cache:q}"


rule dual_backbone:
    input:
        metadata="results/data/{dataset}.tsv",
        model=dual_backbone_model,
    output:
        predictions="results/stages/dual_backbone/{dataset}/predictions.tsv",
        threshold="results/stages/dual_backbone/{dataset}/threshold.json",
        curve="results/stages/dual_backbone/{dataset}/threshold_curve.tsv",
        pseudo="results/stages/dual_backbone/{dataset}/pseudo.parquet",
    log:
        "logs/dual_backbone/{dataset}.log",
    conda:
        CONDA_ENV
    threads: compute("dual_backbone", "threads", 2)
    resources:
        gpu=compute("dual_backbone", "gpu", 0),
        mem_mb=compute("dual_backbone", "mem_mb", 4000),
        runtime=compute("dual_backbone", "runtime", 60),
    params:
        threshold=as_json(config_provider("thresholds", "dual_backbone")),
        tuning=as_json(config_provider("threshold_tuning")),
        k=config_provider("dual_backbone", "k"),
        batch_size=config_provider("dual_backbone", "training", "batch_size"),
        device=job_device,
        cache=config_provider("cache", "embeddings"),
    message:
        "Dual-backbone ArcFace retrieval and open-set threshold of {wildcards.dataset} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.dual_backbone predict --metadata {input.metadata:q} --model {input.model:q} "
        "--dataset {wildcards.dataset:q} --threshold {params.threshold:q} --tuning {params.tuning:q} "
        "--k {params.k:q} --batch-size {params.batch_size:q} --device {params.device:q} --threads {threads} "
        "--predictions {output.predictions:q} --threshold-out {output.threshold:q} --curve {output.curve:q} --log {log:q} "
        "--pseudo-out {output.pseudo:q} --cache {params.cache:q}"


rule dual_backbone_embeddings:
    input:
        metadata="results/data/{dataset}.tsv",
        model="results/dual_backbone/{dataset}/{key}/model.pt",
    output:
        embeddings="results/dual_backbone/{dataset}/{key}/embeddings.npz",
    log:
        "logs/dual_backbone_embeddings/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    threads: compute("dual_backbone_embeddings", "threads", 2)
    resources:
        gpu=compute("dual_backbone_embeddings", "gpu", 0),
        mem_mb=compute("dual_backbone_embeddings", "mem_mb", 4000),
        runtime=compute("dual_backbone_embeddings", "runtime", 60),
    params:
        cache=config_provider("cache", "embeddings"),
        device=job_device,
    message:
        "Embedding every {wildcards.dataset} image with its trained dual-backbone model, shortlist backbone trained (gpu={resources.gpu})"
    shell:
        "python -m workflow.dual_backbone embed --model {input.model:q} --metadata {input.metadata:q} "
        "--cache {params.cache:q} --device {params.device:q} --threads {threads} --out {output.embeddings:q} "
        "--log {log:q}"


rule dual_backbone_pairs:
    input:
        metadata="results/data/{dataset}.tsv",
        model=trained_pairs_model,
        shortlist=shortlist_input,
    output:
        scores="results/trained_pairs/{dataset}/trained/{key}.parquet",
    log:
        "logs/dual_backbone_pairs/{dataset}/{key}.log",
    conda:
        CONDA_ENV
    threads: compute("dual_backbone_pairs", "threads", 2)
    resources:
        gpu=compute("dual_backbone_pairs", "gpu", 0),
        mem_mb=compute("dual_backbone_pairs", "mem_mb", 4000),
        runtime=compute("dual_backbone_pairs", "runtime", 60),
    params:
        cache=config_provider("cache", "embeddings"),
        device=job_device,
    message:
        "Held-out dual-backbone similarity of the {wildcards.dataset} shortlist pairs, fusion source trained (gpu={resources.gpu})"
    shell:
        "python -m workflow.dual_backbone pairs --model {input.model:q} --metadata {input.metadata:q} "
        "--shortlist {input.shortlist:q} --cache {params.cache:q} --device {params.device:q} "
        "--threads {threads} --out {output.scores:q} --log {log:q}"
