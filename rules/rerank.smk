rule rerank:
    input:
        metadata="results/data/{dataset}.tsv",
        pairs="results/stages/wildfusion/{dataset}/pairs.parquet",
    output:
        predictions="results/stages/rerank/{dataset}/predictions.tsv",
        threshold="results/stages/rerank/{dataset}/threshold.json",
        curve="results/stages/rerank/{dataset}/threshold_curve.tsv",
        pairs="results/stages/rerank/{dataset}/pairs.parquet",
        cost="results/stages/rerank/{dataset}/cost.json",
        pseudo="results/stages/rerank/{dataset}/pseudo.parquet",
    log:
        "logs/rerank/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        conf=as_json(config_provider("rerank")),
        threshold=as_json(config_provider("thresholds", "rerank")),
        tuning=as_json(config_provider("threshold_tuning")),
    message:
        "k-reciprocal re-ranking of the WildFusion scores of {wildcards.dataset}"
    shell:
        "python -m workflow.rerank --metadata {input.metadata:q} --pairs {input.pairs:q} "
        "--dataset {wildcards.dataset:q} --conf {params.conf:q} "
        "--threshold {params.threshold:q} --tuning {params.tuning:q} "
        "--predictions {output.predictions:q} --threshold-out {output.threshold:q} --curve {output.curve:q} "
        "--pairs-out {output.pairs:q} --cost {output.cost:q} --pseudo {output.pseudo:q} --log {log:q}"
