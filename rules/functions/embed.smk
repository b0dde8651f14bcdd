# Keys, paths and input functions of the embeddings' rules (rules/embed.smk, which includes this file first).
from workflow.keys import param_key, weights_identity

# Backbone options that change how fast embeddings are computed, not what they are.
EMBED_RUNTIME_KEYS = ("batch_size",)


def backbone_conf(backbone):
    if backbone not in config["backbones"]:
        raise WorkflowError(
            f"unknown backbone {backbone!r}; configured: {sorted(config['backbones'])}"
        )
    return config["backbones"][backbone]


def backbone_json(wildcards):
    return json.dumps(backbone_conf(wildcards.backbone), sort_keys=True)


def backbone_weights(backbone):
    """The identity of a backbone's weights (workflow/keys.py: file sha1, hub snapshot, package version).

    Part of the key of every output computed from them, so replaced weights rerun exactly those jobs.
    """
    conf = {
        k: v for k, v in backbone_conf(backbone).items() if k not in EMBED_RUNTIME_KEYS
    }
    memo = json.dumps(conf, sort_keys=True)
    if memo not in _WEIGHTS:
        _WEIGHTS[memo] = weights_identity(conf)
    return _WEIGHTS[memo]


# Weights' identities, computed once per start (backbone settings -> identity).
_WEIGHTS = {}


def embedding_key(backbone):
    conf = {
        k: v for k, v in backbone_conf(backbone).items() if k not in EMBED_RUNTIME_KEYS
    }
    return param_key("embed", backbone, conf, backbone_weights(backbone))


def embedding_path(dataset, backbone):
    return f"results/embeddings/{dataset}/{backbone}/{embedding_key(backbone)}.npz"


def embed_metadata(wildcards):
    check_key(
        wildcards,
        embedding_key(wildcards.backbone),
        f"embeddings {wildcards.dataset}/{wildcards.backbone}",
    )
    return f"results/data/{wildcards.dataset}.tsv"
