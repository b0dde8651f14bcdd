include: "functions/data.smk"


# The per-dataset tables are brought up to date when the workflow starts (_start_run() in rules/start.smk,
# content-stable); this rule builds the tables that do not exist yet (first run, a new dataset, or the demo's
# data) in one job, so that no job opens an image before every dataset's images passed the checks.
if TABLES_TO_BUILD:

    rule validate_data:
        input:
            metadata=metadata_input(),
        output:
            tables=expand("results/data/{dataset}.tsv", dataset=TABLES_TO_BUILD),
        log:
            "logs/validate_data.log",
        conda:
            CONDA_ENV
        threads: 2
        params:
            root=lambda wildcards, input: Path(input.metadata).parent,
            datasets=TABLES_TO_BUILD,
            extra=config_provider("data", "extra_required_columns"),
            symlinks=lambda wildcards: (
                ["--allow-external-symlinks"]
                if config["data"]["allow_external_symlinks"]
                else []
            ),
            discovery=["--discovery"] if DISCOVERY else [],
        message:
            "Validating {input.metadata} and every image it names of {params.datasets}"
        shell:
            "python -m workflow.tables write --root {params.root:q} --out-dir results/data "
            "--datasets {params.datasets:q} --extra-columns {params.extra:q} "
            "{params.symlinks:q} {params.discovery:q} --threads {threads} --log {log:q}"


# Only scoring, the plots and the shortlist's recall depend on the answer key (and so on this check).
rule validate_solution:
    input:
        solution=solution_input(),
        tables=dataset_tables(),
    output:
        summary="results/data/solution.json",
    log:
        "logs/validate_solution.log",
    conda:
        CONDA_ENV
    params:
        root=lambda wildcards, input: Path(input.solution[0]).parent,
    message:
        "Validating {input.solution} against the query images of every dataset"
    shell:
        "python -m workflow.tables solution --root {params.root:q} --tables {input.tables:q} "
        "--out {output.summary:q} --log {log:q}"
