rule validate_data:
    input:
        metadata=metadata_input(),
        solution=solution_input(),
    output:
        tables=expand("results/data/{dataset}.tsv", dataset=DATASETS),
    log:
        "logs/validate_data.log",
    conda:
        CONDA_ENV
    threads: 2
    params:
        root=lambda wildcards, input: Path(input.metadata).parent,
        datasets=DATASETS,
        extra=config_provider("data", "extra_required_columns", default=[]),
        symlinks=lambda wildcards: (
            ["--allow-external-symlinks"]
            if config.get("data", {}).get("allow_external_symlinks")
            else []
        ),
    message:
        "Validating {input.metadata} and every image it names"
    shell:
        "python -m workflow.data --root {params.root:q} --out-dir results/data "
        "--datasets {params.datasets:q} --extra-columns {params.extra:q} "
        "{params.symlinks:q} --threads {threads} --log {log:q}"
