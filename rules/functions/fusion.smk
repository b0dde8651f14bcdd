# Keys, paths and input functions of WildFusion's (calibration and fusion) rules (rules/fusion.smk, which includes this file first).
from workflow.keys import param_key


def calibration_key(source, dataset):
    if source == "cosine":
        upstream = shortlist_key(dataset)
    elif source == TRAINED:
        upstream = trained_pairs_key(dataset)
    elif source == LNBNN:
        upstream = lnbnn_pairs_key(dataset)
    else:
        upstream = match_key(source, dataset)
    return param_key("calibrate", source, upstream)


def fuses_trained():
    """Whether the dual-backbone similarity is a fusion source: wildfusion.trained true, or auto with the
    dual_backbone stage in stages and the frozen mode (the fuse step then keeps it only where it raises the
    gallery's simulated score).
    """
    setting = config["wildfusion"]["trained"]
    if setting == "auto":
        return "dual_backbone" in config["stages"] and dual_backbone_mode() == "frozen"
    return setting is True


def trained_setting(wildcards=None):
    """The fuse step's --trained: auto (keep the source trained only where it helps) or fixed (as listed)."""
    return "auto" if config["wildfusion"]["trained"] == "auto" else "fixed"


def lnbnn_setting(wildcards=None):
    """The fuse step's --lnbnn: auto (keep the source lnbnn only where it helps) or fixed (as listed)."""
    return "auto" if config["wildfusion"]["lnbnn"] == "auto" else "fixed"


def fusion_sources(wildcards=None):
    """The fused sources besides the cosine: the matchers, then the dual-backbone similarity and the LNBNN
    score if enabled."""
    trained = [TRAINED] if fuses_trained() else []
    lnbnn = [LNBNN] if config["wildfusion"]["lnbnn"] is not False else []
    return [*config["wildfusion"]["matchers"], *trained, *lnbnn]


def source_files(dataset, source):
    """Raw score files of one fusion source (none for the global cosine)."""
    if source == "cosine":
        return []
    if source == TRAINED:
        return [trained_pairs_path(dataset)]
    if source == LNBNN:
        return [lnbnn_pairs_path(dataset)]
    return matcher_shards(dataset, source)


def source_shards(wildcards):
    """Shards of one calibration source (none for the global cosine)."""
    check_key(
        wildcards,
        calibration_key(wildcards.source, wildcards.dataset),
        f"calibrator {wildcards.dataset}/{wildcards.source}",
    )
    return source_files(wildcards.dataset, wildcards.source)


def all_shards(wildcards):
    return [s for m in fusion_sources() for s in source_files(wildcards.dataset, m)]


def calibrators(wildcards):
    """Calibrators in the order the fusion expects: cosine first, then :func:`fusion_sources`."""
    return [
        f"results/calibration/{wildcards.dataset}/{source}/{calibration_key(source, wildcards.dataset)}.json"
        for source in ["cosine", *fusion_sources()]
    ]
