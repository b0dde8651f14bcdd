# Keys, paths and input functions of scoring's and the submission's rules (rules/evaluate.smk, which includes this file first).
def stage_predictions(wildcards):
    return expand(
        "results/stages/{stage}/{dataset}/predictions.tsv",
        stage=wildcards.stage,
        dataset=IDENTIFIED,
    )


def submission_predictions(wildcards):
    return expand(
        "results/stages/{stage}/{dataset}/predictions.tsv",
        stage=config["submission"]["stage"],
        dataset=IDENTIFIED,
    )
