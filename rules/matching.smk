from workflow.keys import param_key
from workflow.matcher_keys import extractor_identity, matching_weights_identity
from workflow.matchers import WeightsNotFoundError

# Learned matchers' weight identities, computed once per start (matcher and settings -> identities).
_MATCHER_WEIGHTS = {}


def matcher_conf(matcher):
    if matcher not in config["wildfusion"]["matchers"] and not (
        uses_lnbnn() and matcher == config["lnbnn"]["extractor"]
    ):
        raise WorkflowError(
            f"matcher {matcher!r} is not in wildfusion.matchers {config['wildfusion']['matchers']}"
        )
    return config["matchers"].get(matcher, {})


def matcher_json(wildcards):
    return json.dumps(matcher_conf(wildcards.matcher), sort_keys=True)


def matcher_weights(matcher):
    """Identities of a learned matcher's weight files: [extractor, matching network] ("" where none)."""
    memo = json.dumps([matcher, matcher_conf(matcher)], sort_keys=True)
    if memo not in _MATCHER_WEIGHTS:
        conf = matcher_conf(matcher)
        try:
            found = [
                extractor_identity(matcher, conf),
                matching_weights_identity(matcher, conf),
            ]
        except WeightsNotFoundError as err:
            raise WorkflowError(f"matchers.{matcher}: {err}") from None
        _MATCHER_WEIGHTS[memo] = found
    return _MATCHER_WEIGHTS[memo]


def features_key(matcher):
    extractor = matcher_weights(matcher)[0]
    return param_key(
        "features", matcher, matcher_conf(matcher), *([extractor] if extractor else [])
    )


def features_path(dataset, matcher):
    return f"results/features/{dataset}/{matcher}/{features_key(matcher)}.tsv"


def features_metadata(wildcards):
    check_key(
        wildcards,
        features_key(wildcards.matcher),
        f"features {wildcards.dataset}/{wildcards.matcher}",
    )
    return f"results/data/{wildcards.dataset}.tsv"


def match_key(matcher, dataset):
    return param_key(
        "match",
        matcher,
        matcher_conf(matcher),
        features_key(matcher),
        shortlist_key(dataset),
        config["wildfusion"]["shards"],
        *[w for w in matcher_weights(matcher) if w],
    )


def match_features(wildcards):
    check_key(
        wildcards,
        match_key(wildcards.matcher, wildcards.dataset),
        f"match shards {wildcards.dataset}/{wildcards.matcher}",
    )
    return features_path(wildcards.dataset, wildcards.matcher)


def matcher_shards(dataset, matcher):
    return expand(
        "results/matches/{dataset}/{matcher}/{key}/shard{shard}.parquet",
        dataset=dataset,
        matcher=matcher,
        key=match_key(matcher, dataset),
        shard=range(config["wildfusion"]["shards"]),
    )


rule extract_features:
    input:
        metadata=features_metadata,
    output:
        manifest="results/features/{dataset}/{matcher}/{key}.tsv",
    log:
        "logs/extract_features/{dataset}/{matcher}/{key}.log",
    benchmark:
        "logs/benchmarks/extract_features/{dataset}/{matcher}/{key}.tsv"
    conda:
        CONDA_ENV
    threads: compute("extract_features", "threads", 2)
    resources:
        gpu=compute("extract_features", "gpu", 0),
        mem_mb=compute("extract_features", "mem_mb", 4000),
        runtime=compute("extract_features", "runtime", 60),
    params:
        conf=matcher_json,
        cache=config_provider("cache", "features"),
        device=job_device,
    message:
        "Extracting {wildcards.matcher} local features of every {wildcards.dataset} image (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.match extract --matcher {wildcards.matcher:q} --conf {params.conf:q} "
        "--metadata {input.metadata:q} --cache {params.cache:q} --device {params.device:q} "
        "--threads {threads} --out {output.manifest:q} --log {log:q}"


rule match_shard:
    input:
        shortlist=shortlist_input,
        features=match_features,
    output:
        scores="results/matches/{dataset}/{matcher}/{key}/shard{shard}.parquet",
        cost="results/matches/{dataset}/{matcher}/{key}/shard{shard}.cost.json",
    log:
        "logs/match_shard/{dataset}/{matcher}/{key}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/match_shard/{dataset}/{matcher}/{key}/shard{shard}.tsv"
    conda:
        CONDA_ENV
    threads: compute("match_shard", "threads", 2)
    resources:
        gpu=compute("match_shard", "gpu", 0),
        mem_mb=compute("match_shard", "mem_mb", 4000),
        runtime=compute("match_shard", "runtime", 60),
    params:
        conf=matcher_json,
        n_shards=config_provider("wildfusion", "shards"),
        device=job_device,
        pair_cache=config_provider("cache", "pairs"),
        learned_pairs=config_provider("cache", "learned_pairs"),
    message:
        "Matching shard {wildcards.shard} of {wildcards.dataset} with {wildcards.matcher} (gpu={resources.gpu}, mem_mb={resources.mem_mb}, runtime={resources.runtime} min)"
    shell:
        "python -m workflow.match shard --matcher {wildcards.matcher:q} --conf {params.conf:q} "
        "--shortlist {input.shortlist:q} --features {input.features:q} --shard {wildcards.shard:q} "
        "--n-shards {params.n_shards:q} --device {params.device:q} --threads {threads} "
        "--pair-cache {params.pair_cache:q} --learned-pairs {params.learned_pairs:q} "
        "--out {output.scores:q} --cost {output.cost:q} --log {log:q}"
