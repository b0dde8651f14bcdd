include: "functions/xgboost.smk"


rule xgboost_train:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=xgboost_train_embeddings,
    output:
        model="results/xgboost/{dataset}/{key}/model.ubj",
        meta="results/xgboost/{dataset}/{key}/model.json",
    log:
        "logs/xgboost_train/{dataset}/{key}.log",
    benchmark:
        "logs/benchmarks/xgboost_train/{dataset}/{key}.tsv"
    conda:
        CONDA_ENV
    threads: compute("xgboost_train", "threads", 2)
    resources:
        gpu=compute("xgboost_train", "gpu", 0),
        mem_mb=compute("xgboost_train", "mem_mb", 4000),
        runtime=compute("xgboost_train", "runtime", 60),
    params:
        backbones=xgboost_backbones,
        conf=as_json(xgboost_train_conf),
        device=job_device,
    message:
        "Training the XGBoost meta-classifier of {wildcards.dataset} on {params.backbones} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.xgb train --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--backbones {params.backbones:q} --conf {params.conf:q} --device {params.device:q} --threads {threads} "
        "--model {output.model:q} --model-meta {output.meta:q} --log {log:q}"


rule xgboost:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=xgboost_embeddings,
        model=xgboost_model("model.ubj"),
        meta=xgboost_model("model.json"),
        base_predictions=xgboost_base("predictions.tsv"),
        base_pairs=xgboost_base("pairs.parquet"),
        base_threshold=xgboost_base("threshold.json"),
    output:
        predictions="results/stages/xgboost/{dataset}/predictions.tsv",
        threshold="results/stages/xgboost/{dataset}/threshold.json",
        curve="results/stages/xgboost/{dataset}/threshold_curve.tsv",
    log:
        "logs/xgboost/{dataset}.log",
    conda:
        CONDA_ENV
    threads: compute("xgboost", "threads", 2)
    resources:
        gpu=compute("xgboost", "gpu", 0),
        mem_mb=compute("xgboost", "mem_mb", 4000),
        runtime=compute("xgboost", "runtime", 60),
    params:
        backbones=xgboost_backbones,
        conf=as_json(xgboost_train_conf),
        score_column=xgboost_score_column,
        threshold=as_json(config_provider("thresholds", "xgboost")),
        tuning=as_json(config_provider("threshold_tuning")),
        device=job_device,
    message:
        "XGBoost confidence gate over the {params.score_column} labels of {wildcards.dataset} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.xgb gate --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--backbones {params.backbones:q} --conf {params.conf:q} --device {params.device:q} --threads {threads} "
        "--model {input.model:q} --model-meta {input.meta:q} --base-predictions {input.base_predictions:q} "
        "--base-pairs {input.base_pairs:q} --base-threshold {input.base_threshold:q} "
        "--score-column {params.score_column:q} --dataset {wildcards.dataset:q} "
        "--threshold {params.threshold:q} --tuning {params.tuning:q} "
        "--predictions {output.predictions:q} --threshold-out {output.threshold:q} --curve {output.curve:q} --log {log:q}"


rule xgboost_pseudo:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=xgboost_embeddings,
    output:
        pseudo="results/stages/xgboost/{dataset}/pseudo.parquet",
    log:
        "logs/xgboost_pseudo/{dataset}.log",
    benchmark:
        "logs/benchmarks/xgboost_pseudo/{dataset}.tsv"
    conda:
        CONDA_ENV
    threads: compute("xgboost_pseudo", "threads", 2)
    resources:
        gpu=compute("xgboost_pseudo", "gpu", 0),
        mem_mb=compute("xgboost_pseudo", "mem_mb", 4000),
        runtime=compute("xgboost_pseudo", "runtime", 60),
    params:
        backbones=xgboost_backbones,
        conf=as_json(xgboost_train_conf),
        tuning=as_json(config_provider("threshold_tuning")),
        repeats=config_provider("threshold_tuning", "trained_repeats"),
        device=job_device,
    message:
        "XGBoost auxiliary models on {params.repeats} simulated open-set split(s) of the {wildcards.dataset} gallery (gpu={resources.gpu})"
    shell:
        "python -m workflow.xgb pseudo --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--backbones {params.backbones:q} --conf {params.conf:q} --device {params.device:q} --threads {threads} "
        "--tuning {params.tuning:q} --repeats {params.repeats:q} --pseudo {output.pseudo:q} --log {log:q}"
