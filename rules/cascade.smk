rule cascade:
    input:
        unpack(cascade_inputs),
    output:
        predictions="results/stages/cascade/{dataset}/predictions.tsv",
    log:
        "logs/cascade/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        steps=as_json(cascade_steps),
        sources=cascade_source_args("predictions"),
        thresholds=cascade_source_args("threshold"),
    message:
        "Cascade of {wildcards.dataset}: the configured steps over the stages' predictions"
    shell:
        "python -m workflow.cascade --dataset {wildcards.dataset:q} --steps {params.steps:q} "
        "--source {params.sources:q} --threshold {params.thresholds:q} "
        "--predictions {output.predictions:q} --log {log:q}"
