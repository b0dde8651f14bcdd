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
        device=config_provider("device", default="auto"),
        mode=dual_backbone_mode,
        frozen=as_json(config_provider("dual_backbone", "frozen", default={})),
        cache=config_provider("cache", "embeddings"),
    message:
        "Training the dual-backbone ArcFace model of {wildcards.dataset} ({params.mode})"
    shell:
        "python -m workflow.dual_backbone train --metadata {input.metadata} "
        "--backbones '{params.backbones}' --head '{params.head}' --augment '{params.augment}' "
        "--epochs '{params.epochs}' --training '{params.training}' "
        "--checkpoint-dir {params.checkpoint_dir} --model-out {output.model} --history {output.history} "
        "--device {params.device} --threads {threads} --log {log} "
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
    threads: compute("dual_backbone_train", "threads", 2)
    resources:
        gpu=compute("dual_backbone_train", "gpu", 0),
        mem_mb=compute("dual_backbone_train", "mem_mb", 4000),
        runtime=compute("dual_backbone_train", "runtime", 60),
    params:
        threshold=as_json(
            config_provider("thresholds", "dual_backbone", default="auto")
        ),
        tuning=as_json(config_provider("threshold_tuning")),
        k=config_provider("dual_backbone", "k", default=50),
        batch_size=config_provider(
            "dual_backbone", "training", "batch_size", default=16
        ),
        device=config_provider("device", default="auto"),
        cache=config_provider("cache", "embeddings"),
    message:
        "Dual-backbone ArcFace retrieval and open-set threshold of {wildcards.dataset}"
    shell:
        "python -m workflow.dual_backbone predict --metadata {input.metadata} --model {input.model} "
        "--dataset {wildcards.dataset} --threshold '{params.threshold}' --tuning '{params.tuning}' "
        "--k {params.k} --batch-size {params.batch_size} --device {params.device} --threads {threads} "
        "--predictions {output.predictions} --threshold-out {output.threshold} --curve {output.curve} --log {log} "
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
    threads: compute("dual_backbone_train", "threads", 2)
    resources:
        gpu=compute("dual_backbone_train", "gpu", 0),
        mem_mb=compute("dual_backbone_train", "mem_mb", 4000),
        runtime=compute("dual_backbone_train", "runtime", 60),
    params:
        cache=config_provider("cache", "embeddings"),
        device=config_provider("device", default="auto"),
    message:
        "Embedding every {wildcards.dataset} image with its trained dual-backbone model (shortlist backbone trained)"
    shell:
        "python -m workflow.dual_backbone_frozen embed --model {input.model:q} --metadata {input.metadata:q} "
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
    threads: compute("dual_backbone_train", "threads", 2)
    resources:
        gpu=compute("dual_backbone_train", "gpu", 0),
        mem_mb=compute("dual_backbone_train", "mem_mb", 4000),
        runtime=compute("dual_backbone_train", "runtime", 60),
    params:
        cache=config_provider("cache", "embeddings"),
        device=config_provider("device", default="auto"),
    message:
        "Held-out dual-backbone similarity of the {wildcards.dataset} shortlist pairs (fusion source trained)"
    shell:
        "python -m workflow.dual_backbone_frozen pairs --model {input.model:q} --metadata {input.metadata:q} "
        "--shortlist {input.shortlist:q} --cache {params.cache:q} --device {params.device:q} "
        "--threads {threads} --out {output.scores:q} --log {log:q}"
