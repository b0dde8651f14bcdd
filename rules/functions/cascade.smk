# Keys, paths and input functions of the cascade's rules (rules/cascade.smk, which includes this file first).
# The candidates of ``cascade: auto`` are the stages that write pseudo.parquet (their predictions on the simulated
# open-set splits of the gallery): SIMULATED of the stage registry.
from workflow.stages import SIMULATED


def cascade_steps(wildcards):
    """The dataset's cascade: ``cascade.<dataset>``, else ``cascade.default``, else a clear error.

    A list of steps, or ``auto`` (chosen on the gallery by workflow/cascade_auto.py). A ``null`` entry counts
    as absent (``default: null`` in an overlay removes the shipped default).
    """
    steps = {
        name: value for name, value in config["cascade"].items() if value is not None
    }
    if wildcards.dataset in steps:
        return steps[wildcards.dataset]
    if "default" in steps:
        return steps["default"]
    raise WorkflowError(
        f"stage cascade: no steps for dataset {wildcards.dataset!r}: add a list of steps (or auto) under "
        f"cascade.{wildcards.dataset} (or cascade.default) to the config; configured: {sorted(steps)}"
    )


def cascade_is_auto(wildcards):
    return cascade_steps(wildcards) == "auto"


def cascade_sources(wildcards):
    """Sources of the dataset's cascade: those its steps name, or for auto every stage run that writes pseudo.parquet."""
    if cascade_is_auto(wildcards):
        sources = [s for s in SIMULATED if s in STAGES]
        if not sources:
            raise WorkflowError(
                f"cascade: auto needs at least one of the stages {list(SIMULATED)} in stages; got {STAGES}"
            )
        return sources
    return sorted({step["source"] for step in cascade_steps(wildcards)})


def cascade_inputs(wildcards):
    """Predictions and threshold.json (auto: and pseudo.parquet) of every source stage of the dataset's cascade."""
    names = ("predictions.tsv", "threshold.json")
    if cascade_is_auto(wildcards):
        names += ("pseudo.parquet",)
    files = {}
    for source in cascade_sources(wildcards):
        for name in names:
            files[f"{source}_{name.split('.')[0]}"] = (
                f"results/stages/{source}/{wildcards.dataset}/{name}"
            )
    return files


def cascade_source_args(kind):
    """``NAME=PATH`` arguments of the cascade entry point (kind: predictions, threshold or pseudo), one list item each
    so that the rule's ``:q`` quotes every item."""

    def inner(wildcards, input):
        return [
            f"{source}={input[f'{source}_{kind}']}"
            for source in cascade_sources(wildcards)
            if f"{source}_{kind}" in input.keys()
        ]

    return inner
