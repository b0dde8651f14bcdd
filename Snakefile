# Open-set individual animal re-identification: the AnimalCLEF 2025 second-place meta-algorithm
# (WildFusion -> re-ranking -> XGBoost -> dual-backbone ArcFace cascade) as a Snakemake workflow.
from pathlib import Path

from snakemake.utils import min_version, validate

from workflow.config_check import check_config, load_schema
from workflow.config_cli import retype_nested

min_version("9.0")


configfile: "config/config.yaml"


# The demo's own settings apply only when data_root is the demo (--config/--configfile values still win); every
# start says so (rules/start.smk).
DEMO_OVERLAY = (
    Path(config["data_root"]).resolve() == Path(config["demo"]["root"]).resolve()
)
if DEMO_OVERLAY:

    configfile: "config/demo.yaml"


# Every config mistake fails here, before any job, naming the key and the fix (workflow/config_check.py);
# validate() then fills the schema's defaults. The checks that need the data run in rules/common.smk and
# rules/start.smk.
# Values nested in --config (review={thumbnail: 480}) arrive as text: given the schema's types first.
retype_nested(
    config,
    workflow.config_settings.config or {},
    load_schema(Path(workflow.basedir) / "config" / "schema.yaml"),
)
check_config(config, Path(workflow.basedir) / "config" / "schema.yaml")


validate(config, "config/schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/start.smk"
include: "rules/demo.smk"
include: "rules/data.smk"
include: "rules/embed.smk"
include: "rules/baseline.smk"
include: "rules/shortlist.smk"
include: "rules/matching.smk"
include: "rules/fusion.smk"
include: "rules/lnbnn.smk"
include: "rules/rerank.smk"
include: "rules/xgboost.smk"
include: "rules/dual_backbone.smk"
include: "rules/cascade.smk"
include: "rules/discovery.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/review.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
