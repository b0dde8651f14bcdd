rule baseline:
    input:
        metadata="results/data/{dataset}.tsv",
        embeddings=lambda wc: embedding_path(wc.dataset, config["baseline"]["backbone"]),
    output:
        predictions="results/stages/baseline/{dataset}/predictions.tsv",
        threshold="results/stages/baseline/{dataset}/threshold.json",
        curve="results/stages/baseline/{dataset}/threshold_curve.tsv",
        pseudo="results/stages/baseline/{dataset}/pseudo.parquet",
    log:
        "logs/baseline/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        threshold=as_json(config_provider("thresholds", "baseline")),
        tuning=as_json(config_provider("threshold_tuning")),
    message:
        "Baseline: cosine 1-NN with an open-set threshold on {wildcards.dataset}"
    shell:
        "python -m workflow.baseline --metadata {input.metadata} --embeddings {input.embeddings} "
        "--dataset {wildcards.dataset} --threshold '{params.threshold}' --tuning '{params.tuning}' "
        "--predictions {output.predictions} --threshold-out {output.threshold} "
        "--curve {output.curve} --pseudo {output.pseudo} --log {log}"
