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
    message:
        "Training the XGBoost meta-classifier of {wildcards.dataset} on {params.backbones}"
    shell:
        "python -m workflow.xgb train --metadata {input.metadata} --embeddings {input.embeddings} "
        "--backbones {params.backbones} --conf '{params.conf}' --threads {threads} "
        "--model {output.model} --model-meta {output.meta} --log {log}"


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
    threads: compute("xgboost_train", "threads", 2)
    resources:
        gpu=compute("xgboost_train", "gpu", 0),
        mem_mb=compute("xgboost_train", "mem_mb", 4000),
        runtime=compute("xgboost_train", "runtime", 60),
    params:
        backbones=xgboost_backbones,
        conf=as_json(xgboost_train_conf),
        score_column=xgboost_score_column,
        threshold=as_json(config_provider("thresholds", "xgboost", default="auto")),
        tuning=as_json(config_provider("threshold_tuning")),
    message:
        "XGBoost confidence gate over the {params.score_column} labels of {wildcards.dataset}"
    shell:
        "python -m workflow.xgb gate --metadata {input.metadata} --embeddings {input.embeddings} "
        "--backbones {params.backbones} --conf '{params.conf}' --threads {threads} "
        "--model {input.model} --model-meta {input.meta} --base-predictions {input.base_predictions} "
        "--base-pairs {input.base_pairs} --base-threshold {input.base_threshold} "
        "--score-column {params.score_column} --dataset {wildcards.dataset} "
        "--threshold '{params.threshold}' --tuning '{params.tuning}' "
        "--predictions {output.predictions} --threshold-out {output.threshold} --curve {output.curve} --log {log}"


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
    threads: compute("xgboost_train", "threads", 2)
    resources:
        gpu=compute("xgboost_train", "gpu", 0),
        mem_mb=compute("xgboost_train", "mem_mb", 4000),
        runtime=compute("xgboost_train", "runtime", 60),
    params:
        backbones=xgboost_backbones,
        conf=as_json(xgboost_train_conf),
        tuning=as_json(config_provider("threshold_tuning")),
        repeats=config_provider("threshold_tuning", "trained_repeats", default=1),
    message:
        "XGBoost auxiliary models on {params.repeats} simulated open-set split(s) of the {wildcards.dataset} gallery"
    shell:
        "python -m workflow.xgb pseudo --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--backbones {params.backbones:q} --conf {params.conf:q} --threads {threads} "
        "--tuning {params.tuning:q} --repeats {params.repeats} --pseudo {output.pseudo:q} --log {log:q}"
