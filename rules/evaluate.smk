include: "functions/evaluate.smk"


rule score_stage:
    input:
        predictions=stage_predictions,
        metadata=identified_tables(),
        solution=solution_input(),
        solution_check=solution_check(),
    output:
        scores="results/stages/{stage}/scores.tsv",
    log:
        "logs/score/{stage}.log",
    conda:
        CONDA_ENV
    message:
        "Scoring stage {wildcards.stage}"
    shell:
        "python -m workflow.evaluate score --stage {wildcards.stage:q} "
        "--predictions {input.predictions:q} --metadata {input.metadata:q} "
        "--solution {input.solution:q} --out {output.scores:q} --log {log:q}"


rule scores_table:
    input:
        scores=expand("results/stages/{stage}/scores.tsv", stage=STAGES),
    output:
        table=report(
            "results/scores.tsv",
            caption="../report/scores.rst",
            category="Ablation",
        ),
    log:
        "logs/scores_table.log",
    conda:
        CONDA_ENV
    params:
        gallery=GALLERY_VERSION_LINE,
    message:
        "Collecting the ablation table of stages {STAGES}"
    shell:
        "python -m workflow.evaluate table --scores {input.scores:q} --out {output.table:q} --log {log:q}"


rule submission:
    input:
        predictions=submission_predictions,
        metadata=identified_tables(),
        no_gallery=gallery_free_tables(),
    output:
        submission=report(
            "results/submission.csv",
            caption="../report/submission.rst",
            category="Submission",
        ),
    log:
        "logs/submission.log",
    conda:
        CONDA_ENV
    params:
        stage=config_provider("submission", "stage"),
    message:
        "Writing the submission from stage {params.stage}"
    shell:
        "python -m workflow.evaluate submission --predictions {input.predictions:q} "
        "--metadata {input.metadata:q} --no-gallery {input.no_gallery:q} --out {output.submission:q} --log {log:q}"
