def metadata_input():
    """The data's metadata.csv: for the demo, the output of rule demo_data (regenerating the demo rebuilds the
    tables); otherwise ancient, since the tables follow the data's content, not its modification times.
    """
    path = str(DATA_ROOT / "metadata.csv")
    return path if IS_DEMO else ancient(path)


def solution_input():
    """solution.csv where the data has one: only scoring, plots and the shortlist's recall read it."""
    return [str(DATA_ROOT / "solution.csv")] if HAS_SOLUTION else []


def solution_check():
    """The summary that rule validate_solution writes once solution.csv is valid (with solution_input())."""
    return ["results/data/solution.json"] if HAS_SOLUTION else []


def dataset_tables(wildcards=None):
    return expand("results/data/{dataset}.tsv", dataset=DATASETS)


def identified_tables(wildcards=None):
    """Tables of the datasets with a gallery (the per-query stages run and are scored on them only)."""
    return expand("results/data/{dataset}.tsv", dataset=IDENTIFIED)


def gallery_free_tables(wildcards=None):
    """Tables of the datasets without a gallery (their queries are new_individual in the submission)."""
    return expand("results/data/{dataset}.tsv", dataset=GALLERY_FREE)


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
