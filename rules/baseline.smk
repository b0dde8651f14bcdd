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
        "python -m workflow.baseline --metadata {input.metadata:q} --embeddings {input.embeddings:q} "
        "--dataset {wildcards.dataset:q} --threshold {params.threshold:q} --tuning {params.tuning:q} "
        "--predictions {output.predictions:q} --threshold-out {output.threshold:q} "
        "--curve {output.curve:q} --pseudo {output.pseudo:q} --log {log:q}"
