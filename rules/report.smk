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
        "python -m workflow.plots new-share --dataset {wildcards.dataset:q} --stages {params.stages:q} "
        "--predictions {input.predictions:q} --solution {input.solution:q} --out {output.plot:q} --log {log:q}"


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
    threads: compute("plot_matches", "threads", 1)
    resources:
        gpu=compute("plot_matches", "gpu", 0),
        mem_mb=compute("plot_matches", "mem_mb", 4000),
        runtime=compute("plot_matches", "runtime", 60),
    params:
        matchers=lambda wc: json.dumps(
            {m: matcher_conf(m) for m in config["wildfusion"]["matchers"]}
        ),
        n=3,
        device=job_device,
    message:
        "Drawing the local-feature matches of {params.n} {wildcards.dataset} queries (gpu={resources.gpu})"
    shell:
        "python -m workflow.plots matches --dataset {wildcards.dataset:q} --pairs {input.pairs:q} "
        "--metadata {input.metadata:q} --solution {input.solution:q} --matchers {params.matchers:q} "
        "--n {params.n:q} --device {params.device:q} --out {output.plot:q} --log {log:q}"


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
    params:
        gallery=GALLERY_VERSION_LINE,
    message:
        "Rendering the ablation table as HTML"
    shell:
        "python -m workflow.plots scores-html --scores {input.scores:q} --out {output.table:q} --log {log:q}"
