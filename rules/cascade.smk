include: "functions/cascade.smk"


rule cascade:
    input:
        unpack(cascade_inputs),
    output:
        predictions="results/stages/cascade/{dataset}/predictions.tsv",
        choice="results/stages/cascade/{dataset}/choice.json",
    log:
        "logs/cascade/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        steps=as_json(cascade_steps),
        sources=cascade_source_args("predictions"),
        thresholds=cascade_source_args("threshold"),
        pseudo=cascade_source_args("pseudo"),
        search=as_json(config_provider("cascade_auto")),
    message:
        "Cascade of {wildcards.dataset}: the configured (or gallery-chosen) steps over the stages' predictions"
    shell:
        "python -m workflow.cascade --dataset {wildcards.dataset:q} --steps {params.steps:q} "
        "--source {params.sources:q} --threshold {params.thresholds:q} --pseudo {params.pseudo:q} "
        "--search {params.search:q} --predictions {output.predictions:q} --choice {output.choice:q} --log {log:q}"
