# Keys, paths and input functions of local matching's rules (rules/matching.smk, which includes this file first).
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
