include: "functions/fusion.smk"


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
