# The review page of each dataset (requested by final_outputs() when wildfusion runs) and the enrollment of a
# page's decisions into the next gallery version (targets enroll, enroll_undo and enroll_redo, run by name).


include: "functions/review.smk"


rule review:
    input:
        unpack(review_inputs),
    output:
        page=report(
            "results/review/{dataset}.html",
            caption="../report/review.rst",
            category="Review",
            labels={"page": "review", "dataset": "{dataset}"},
        ),
        table="results/review/{dataset}.tsv",
    log:
        "logs/review/{dataset}.log",
    conda:
        CONDA_ENV
    threads: 1
    resources:
        gpu=compute("review", "gpu", 0),
        mem_mb=compute("review", "mem_mb", 4000),
        runtime=compute("review", "runtime", 30),
    params:
        stage=config_provider("submission", "stage"),
        root=str(DATA_ROOT),
        stages=review_stage_args,
        clusters=lambda wc, input: input.get("clusters", ""),
        matcher=review_matcher,
        conf=lambda wc: json.dumps(matcher_conf(review_matcher()), sort_keys=True),
        settings=as_json(review_page_settings),
        device=job_device,
    message:
        "Writing the review page of {wildcards.dataset}: decisions of stage {params.stage}, {params.matcher} matches (gpu={resources.gpu})"
    shell:
        "python -m workflow.review.page --dataset {wildcards.dataset:q} --stage {params.stage:q} "
        "--metadata {input.metadata:q} --pairs {input.pairs:q} --threshold {input.threshold:q} "
        "--decision {input.decision:q} --decider {input.decider:q} --data-root {params.root:q} "
        "--stages {params.stages:q} --clusters {params.clusters:q} "
        "--matcher {params.matcher:q} --conf {params.conf:q} --features {input.features:q} "
        "--device {params.device:q} --settings {params.settings:q} --out {output.page:q} "
        "--table {output.table:q} --log {log:q}"


# snakemake enroll --config decisions=FILE: the next gallery version (rules without outputs always run).
rule enroll:
    input:
        decisions=enroll_decisions,
    log:
        "logs/enroll.log",
    conda:
        CONDA_ENV
    params:
        root=str(DATA_ROOT),
        directory=ENROLLMENT_DIR,
        prefix=config_provider("review", "new_name_prefix"),
        discovery=["--discovery"] if DISCOVERY else [],
    message:
        "Enrolling the decisions of {input.decisions} into the next gallery version under {params.directory}"
    shell:
        "python -m workflow.enrollment enroll --data-root {params.root:q} --dir {params.directory:q} "
        "--decisions {input.decisions:q} --new-name-prefix {params.prefix:q} {params.discovery:q} --log {log:q}"


# snakemake enroll_undo: the previous gallery version becomes the active one (no version is deleted).
rule enroll_undo:
    log:
        "logs/enroll_undo.log",
    conda:
        CONDA_ENV
    params:
        root=str(DATA_ROOT),
        directory=ENROLLMENT_DIR,
    message:
        "Going back to the previous gallery version under {params.directory}"
    shell:
        "python -m workflow.enrollment undo --data-root {params.root:q} --dir {params.directory:q} --log {log:q}"


# snakemake enroll_redo: the version the last enroll_undo left becomes active again (the same as enrolling its
# decision file again).
rule enroll_redo:
    log:
        "logs/enroll_redo.log",
    conda:
        CONDA_ENV
    params:
        root=str(DATA_ROOT),
        directory=ENROLLMENT_DIR,
        discovery=["--discovery"] if DISCOVERY else [],
    message:
        "Making the gallery version the last undo left active again under {params.directory}"
    shell:
        "python -m workflow.enrollment redo --data-root {params.root:q} --dir {params.directory:q} "
        "{params.discovery:q} --log {log:q}"


# The active gallery version of this run (which enrolled photos the results include), beside results/scores.tsv.
rule gallery_version:
    output:
        report(
            "results/gallery_version.json",
            caption="../report/gallery_version.rst",
            category="Gallery",
        ),
    log:
        "logs/gallery_version.log",
    conda:
        CONDA_ENV
    params:
        root=str(DATA_ROOT),
        directory=ENROLLMENT_DIR,
        described=json.dumps(GALLERY, sort_keys=True),
        gallery=GALLERY_VERSION_LINE,
    message:
        "Recording the active gallery version ({params.directory})"
    shell:
        "python -m workflow.enrollment describe --data-root {params.root:q} --dir {params.directory:q} "
        "--out {output:q} --log {log:q}"


# The discovery page of each dataset (with or without a gallery): one card per discovered individual, to confirm,
# split, merge or name; its CSV enrolls like the review page's.
rule review_discovery:
    input:
        metadata="results/data/{dataset}.tsv",
        clusters="results/stages/discovery/{dataset}/clusters.tsv",
    output:
        page=report(
            "results/review/discovery/{dataset}.html",
            caption="../report/review_discovery.rst",
            category="Review",
            labels={"page": "discovery", "dataset": "{dataset}"},
        ),
    log:
        "logs/review_discovery/{dataset}.log",
    conda:
        CONDA_ENV
    params:
        settings=as_json(review_page_settings),
    message:
        "Writing the discovery review page of {wildcards.dataset}"
    shell:
        "python -m workflow.review.discovery_page --dataset {wildcards.dataset:q} --metadata {input.metadata:q} "
        "--clusters {input.clusters:q} --settings {params.settings:q} --out {output.page:q} --log {log:q}"
