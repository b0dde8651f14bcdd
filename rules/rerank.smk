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
        conf=as_json(config_provider("rerank", default={})),
        threshold=as_json(config_provider("thresholds", "rerank", default="auto")),
        tuning=as_json(config_provider("threshold_tuning")),
    message:
        "k-reciprocal re-ranking of the WildFusion scores of {wildcards.dataset}"
    shell:
        "python -m workflow.rerank --metadata {input.metadata} --pairs {input.pairs} "
        "--dataset {wildcards.dataset} --conf '{params.conf}' "
        "--threshold '{params.threshold}' --tuning '{params.tuning}' "
        "--predictions {output.predictions} --threshold-out {output.threshold} --curve {output.curve} "
        "--pairs-out {output.pairs} --cost {output.cost} --pseudo {output.pseudo} --log {log}"
