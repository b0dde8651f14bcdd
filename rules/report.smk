# Figures and tables of the HTML report (snakemake --report results/report.html); requested by
# final_outputs() in rules/common.smk (the new-share curves only when the data has a solution).


rule plot_new_share:
    input:
        predictions=lambda wc: expand(
            "results/stages/{stage}/{dataset}/predictions.tsv",
            stage=STAGES,
            dataset=wc.dataset,
        ),
        solution=solution_input(),
        solution_check=solution_check(),
    output:
        plot=report(
            "results/plots/new_share/{dataset}.png",
            caption="../report/new_share.rst",
            category="Ablation",
            labels={"figure": "score vs new share", "dataset": "{dataset}"},
        ),
    log:
        "logs/plots/new_share/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        stages=STAGES,
    message:
        "Plotting score against the share of new individuals of stages {params.stages} on {wildcards.dataset}"
    shell:
        "python -m workflow.plots new-share --dataset {wildcards.dataset} --stages {params.stages} "
        "--predictions {input.predictions} --solution {input.solution} --out {output.plot} --log {log}"


rule plot_matches:
    input:
        pairs="results/stages/wildfusion/{dataset}/pairs.parquet",
        metadata="results/data/{dataset}.tsv",
        solution=solution_input(),
        solution_check=solution_check(),
    output:
        plot=report(
            "results/plots/matches/{dataset}.png",
            caption="../report/matches.rst",
            category="Matches",
            labels={"figure": "matches", "dataset": "{dataset}"},
        ),
    log:
        "logs/plots/matches/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        matchers=lambda wc: json.dumps(
            {m: matcher_conf(m) for m in config["wildfusion"]["matchers"]}
        ),
        n=3,
        device=config_provider("device"),
    message:
        "Drawing the local-feature matches of {params.n} {wildcards.dataset} queries"
    shell:
        "python -m workflow.plots matches --dataset {wildcards.dataset} --pairs {input.pairs} "
        "--metadata {input.metadata} --solution '{input.solution}' --matchers '{params.matchers}' "
        "--n {params.n} --device {params.device} --out {output.plot} --log {log}"


rule scores_html:
    input:
        scores="results/scores.tsv",
    output:
        table=report(
            "results/plots/scores.html",
            caption="../report/scores_html.rst",
            category="Ablation",
            labels={"figure": "scores table"},
        ),
    log:
        "logs/plots/scores_html.log",
    conda:
        CONDA_ENV
    message:
        "Rendering the ablation table as HTML"
    shell:
        "python -m workflow.plots scores-html --scores {input.scores} --out {output.table} --log {log}"
