"""Tests of the cascade engine (workflow/cascade.py): hand-built cases for each step kind and the paper config."""

from __future__ import annotations

import jsonschema
import numpy as np
import pandas as pd
import pytest
from conftest import schema_part

from workflow import NEW_INDIVIDUAL
from workflow.cascade import (
    PAPER_CASCADE,
    CascadeConfigError,
    run_cascade,
    validate_steps,
)


def preds(rows):
    return pd.DataFrame(rows, columns=["image_id", "top_identity", "top_score"])


def test_first_step_labels_and_new_below():
    wf = preds([("q1", "A", 0.5), ("q2", "B", 0.2), ("q3", "C", 0.397), ("q4", "", 0.9), ("q5", "D", np.nan)])
    out = run_cascade([{"source": "wildfusion", "new_below": 0.397}], {"wildfusion": wf})
    assert list(out.columns) == ["image_id", "identity", "decided_by"]
    assert out["identity"].tolist() == ["A", NEW_INDIVIDUAL, "C", NEW_INDIVIDUAL, NEW_INDIVIDUAL]
    assert (
        out["decided_by"].tolist()
        == ["wildfusion:label", "wildfusion:new", "wildfusion:label"] + ["wildfusion:new"] * 2
    )


def test_first_step_without_threshold_keeps_top_identity():
    out = run_cascade([{"source": "dual_backbone"}], {"dual_backbone": preds([("q1", "A", 0.01)])})
    assert out["identity"].tolist() == ["A"]


def test_override_at_or_above():
    wf = preds([("q1", "A", 0.9), ("q2", "B", 0.1), ("q3", "C", 0.9)])
    xgb = preds([("q1", "X", 0.99), ("q2", "Y", 0.995), ("q3", "Z", 0.98)])
    steps = [{"source": "rerank", "new_below": 0.397}, {"source": "xgboost", "override_at_or_above": 0.99}]
    out = run_cascade(steps, {"rerank": wf, "xgboost": xgb})
    assert out["identity"].tolist() == ["X", "Y", "C"]  # q2 was new, XGBoost >= 99% overrides it
    assert out["decided_by"].tolist() == ["xgboost:override", "xgboost:override", "rerank:label"]


def test_new_below_and_override_above_in_one_step():
    wf = preds([(f"q{i}", "A", 0.9) for i in range(5)])
    db = preds([("q0", "B", 0.63), ("q1", "B", 0.64), ("q2", "B", 0.893), ("q3", "B", 0.894), ("q4", "", 0.99)])
    steps = [{"source": "wildfusion"}, {"source": "dual_backbone", "new_below": 0.64, "override_above": 0.893}]
    out = run_cascade(steps, {"wildfusion": wf, "dual_backbone": db})
    assert out["identity"].tolist() == [NEW_INDIVIDUAL, "A", "A", "B", "A"]
    assert out["decided_by"].tolist()[:4] == [
        "dual_backbone:new",
        "wildfusion:label",
        "wildfusion:label",
        "dual_backbone:override",
    ]


def test_missing_rows_in_later_source_keep_label():
    wf = preds([("q1", "A", 0.9), ("q2", "B", 0.9)])
    db = preds([("q2", "C", 0.1)])
    out = run_cascade([{"source": "wildfusion"}, {"source": "dual_backbone", "new_below": 0.5}],
                      {"wildfusion": wf, "dual_backbone": db})  # fmt: skip
    assert out["identity"].tolist() == ["A", NEW_INDIVIDUAL]


def test_paper_cascade_lynx_end_to_end():
    ids = ["q1", "q2", "q3", "q4"]
    rr = preds(zip(ids, ["A", "B", "C", "D"], [0.30, 0.50, 0.50, 0.50]))
    xgb = preds(zip(ids, ["X", "X", "X", "X"], [0.995, 0.10, 0.10, 0.10]))
    db = preds(zip(ids, ["E", "F", "G", "H"], [0.70, 0.60, 0.95, 0.80]))
    out = run_cascade(PAPER_CASCADE["LynxID2025"], {"rerank": rr, "xgboost": xgb, "dual_backbone": db})
    assert out["identity"].tolist() == ["X", NEW_INDIVIDUAL, "G", "D"]


CASCADE_SCHEMA = schema_part("properties", "cascade")
CASCADE_STEP_SCHEMA = schema_part("$defs", "cascade_step")


def test_paper_cascade_validates_against_schema():
    for steps in PAPER_CASCADE.values():
        for step in steps:
            jsonschema.validate(step, CASCADE_STEP_SCHEMA)
        validate_steps(steps)
    jsonschema.validate(PAPER_CASCADE, CASCADE_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"source": "wildfusion", "threshold": 0.4}, CASCADE_STEP_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"source": "magic"}, CASCADE_STEP_SCHEMA)


@pytest.mark.parametrize(
    "steps, match",
    [
        ([], "non-empty list"),
        ([{"source": "wildfusion", "threshold": 0.4}], "unknown key"),
        ([{"source": "magic"}], "source must be one of"),
        ([{"source": "xgboost", "override_above": 0.9}], "first step defines the initial label"),
        ([{"source": "wildfusion"}, {"source": "xgboost"}], "needs new_below and/or an override"),
        ([{"source": "wildfusion"}, {"source": "xgboost", "override_above": 0.5, "new_below": 0.6}], "overlap"),
        ([{"source": "wildfusion", "new_below": "high"}], "finite number"),
        (
            [{"source": "wildfusion"}, {"source": "xgboost", "override_above": 0.9, "override_at_or_above": 0.9}],
            "not both",
        ),
    ],
)
def test_exception_bad_steps(steps, match):
    with pytest.raises(CascadeConfigError, match=match):
        run_cascade(steps, {"wildfusion": preds([]), "xgboost": preds([])})


def test_exception_missing_source_and_columns():
    with pytest.raises(ValueError, match="not were given|were not given"):
        run_cascade([{"source": "wildfusion"}], {"rerank": preds([])})
    with pytest.raises(ValueError, match="lacks column"):
        run_cascade([{"source": "wildfusion"}], {"wildfusion": pd.DataFrame({"image_id": ["q1"]})})
    with pytest.raises(ValueError, match="duplicated"):
        run_cascade([{"source": "wildfusion"}], {"wildfusion": preds([("q1", "A", 0.5), ("q1", "B", 0.5)])})


def test_auto_thresholds_are_the_sources_own():
    from workflow.cascade import CascadeConfigError, resolve_auto

    steps = [{"source": "rerank", "new_below": "auto"}, {"source": "xgboost", "override_at_or_above": "auto"}]
    assert resolve_auto(steps, {"rerank": 0.4, "xgboost": 0.9}) == [
        {"source": "rerank", "new_below": 0.4}, {"source": "xgboost", "override_at_or_above": 0.9},
    ]  # fmt: skip
    jsonschema.validate(steps, schema_part("properties", "cascade", "additionalProperties"))
    with pytest.raises(CascadeConfigError, match="auto needs the threshold"):
        resolve_auto(steps, {"rerank": 0.4})


def test_entry_point_writes_deciding_source(tmp_path):
    from workflow.cascade import main

    rr = pd.DataFrame({"image_id": ["a", "b", "c"], "identity": ["x", "new_individual", "z"],
                       "top_identity": ["x", "y", "z"], "top_score": [0.9, 0.1, 0.5]})  # fmt: skip
    db = pd.DataFrame({"image_id": ["a", "b", "c"], "identity": ["x", "y", "q"],
                       "top_identity": ["x", "y", "q"], "top_score": [0.5, 0.6, 0.99]})  # fmt: skip
    rr.to_csv(tmp_path / "rr.tsv", sep="\t", index=False)
    db.to_csv(tmp_path / "db.tsv", sep="\t", index=False)
    (tmp_path / "rr.json").write_text('{"threshold": 0.3}')
    steps = '[{"source": "rerank", "new_below": "auto"}, {"source": "dual_backbone", "override_above": 0.95}]'
    out = tmp_path / "out.tsv"
    main(["--dataset", "D", "--steps", steps, "--source", f"rerank={tmp_path / 'rr.tsv'}",
          f"dual_backbone={tmp_path / 'db.tsv'}", "--threshold", f"rerank={tmp_path / 'rr.json'}",
          "--predictions", str(out)])  # fmt: skip
    got = pd.read_csv(out, sep="\t", dtype=str, keep_default_na=False)
    assert list(got.columns) == ["image_id", "identity", "top_identity", "top_score", "decided_by"]
    assert got["identity"].tolist() == ["x", "new_individual", "q"]
    assert got["decided_by"].tolist() == ["rerank:label", "rerank:new", "dual_backbone:override"]
    assert got["top_score"].astype(float).tolist() == [0.9, 0.1, 0.99]
