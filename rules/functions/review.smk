# Keys, paths and input functions of the review page's and enrollment's rules (rules/review.smk, which includes this file first).
from workflow.enrollment import locate_decisions


def review_matcher(wildcards=None):
    """The matcher whose matches the review page draws: review.matcher, else the first of wildfusion.matchers."""
    name = config["review"]["matcher"] or config["wildfusion"]["matchers"][0]
    matcher_conf(name)  # refuses a matcher that is not in wildfusion.matchers
    return name


def review_inputs(wildcards):
    stage = config["submission"]["stage"]
    files = {
        "metadata": f"results/data/{wildcards.dataset}.tsv",
        "pairs": f"results/stages/wildfusion/{wildcards.dataset}/pairs.parquet",
        "threshold": f"results/stages/wildfusion/{wildcards.dataset}/threshold.json",
        "decision": f"results/stages/{stage}/{wildcards.dataset}/predictions.tsv",
        # the thresholds of the stage that decided (the cascade: its steps, as run)
        "decider": f"results/stages/{stage}/{wildcards.dataset}/"
        + ("choice.json" if stage == "cascade" else "threshold.json"),
        "features": features_path(wildcards.dataset, review_matcher()),
    }
    for name in STAGES:
        files[f"stage_{name}"] = (
            f"results/stages/{name}/{wildcards.dataset}/predictions.tsv"
        )
    if DISCOVERY:
        files["clusters"] = f"results/stages/discovery/{wildcards.dataset}/clusters.tsv"
    return files


def review_stage_args(wildcards, input):
    """``NAME=predictions.tsv`` of every stage run, one list item each (quoted by ``:q``)."""
    return [f"{name}={input[f'stage_{name}']}" for name in STAGES]


def review_page_settings(wildcards=None):
    keys = (
        "top_k",
        "band",
        "max_queries",
        "thumbnail",
        "jpeg_quality",
        "match_lines",
        "match_candidates",
        "uncertain_share",
    )
    return {
        **{k: v for k, v in config["review"].items() if k in keys},
        "gallery_version": GALLERY["gallery_version"],
    }


def enroll_decisions(wildcards):
    path = config["decisions"]
    if not path:
        raise WorkflowError(
            "enroll needs a decisions file: snakemake enroll --cores 1 --config decisions=PATH "
            "(the CSV downloaded from results/review/<dataset>.html)"
        )
    found, error = locate_decisions(str(path))  # also in the downloads folder
    if found is None:
        raise WorkflowError(error)
    return str(found)
