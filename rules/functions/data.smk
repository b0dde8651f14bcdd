# Keys, paths and input functions of the data tables' and solution.csv's rules (rules/data.smk, which includes this file first).
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
