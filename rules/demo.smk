rule demo_data:
    output:
        metadata=DEMO_ROOT / "metadata.csv",
        solution=DEMO_ROOT / "solution.csv",
    log:
        "logs/demo_data.log",
    conda:
        CONDA_ENV
    params:
        root=lambda wildcards, output: Path(output.metadata).parent,
        demo=as_json(config_provider("demo")),
    message:
        "Generating the synthetic multi-species demo dataset in {output.metadata}"
    shell:
        "python -m workflow.demo --config {params.demo:q} --out {params.root:q} --log {log:q}"
