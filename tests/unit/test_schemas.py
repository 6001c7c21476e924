"""The JSON Schemas in schema/ are what the models say (regenerate with `make schema`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmbench.config import suite_json_schema
from report.execution_output import execution_output_json_schema
from report.result import result_json_schema

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"


def test_suite_schema_is_current() -> None:
    committed = json.loads((SCHEMA_DIR / "suite.schema.json").read_text())
    assert committed == suite_json_schema(), "schema/suite.schema.json is stale: run `make schema`"


def test_result_schema_is_current() -> None:
    committed = json.loads((SCHEMA_DIR / "result.schema.json").read_text())
    assert committed == result_json_schema(), "schema/result.schema.json is stale: run `make schema`"


def test_execution_output_schema_is_current() -> None:
    committed = json.loads((SCHEMA_DIR / "execution-output.schema.json").read_text())
    assert committed == execution_output_json_schema(), (
        "schema/execution-output.schema.json is stale: run `make schema`"
    )


def test_suite_schema_forbids_unknown_fields() -> None:
    schema = suite_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["Workload"]["additionalProperties"] is False


def test_quality_pass_is_off_by_default_and_the_schema_takes_it() -> None:
    import jsonschema

    from fmbench.config import Evaluation

    assert Evaluation().quality_pass is False
    schema = suite_json_schema()
    assert schema["$defs"]["Evaluation"]["properties"]["quality_pass"]["default"] is False
    suite = {
        "name": "s",
        "targets": [{"name": "t", "platform": "emulator"}],
        "workload": {
            "dataset": {"source": "builtin:synthetic-qa"},
            "bins": [{"min_tokens": 1, "max_tokens": 9}],
        },
        "load": {"concurrency": [1], "requests_per_level": 2},
        "evaluation": {"quality_pass": True},
    }
    jsonschema.validate(suite, schema)
    wrong = {**suite, "evaluation": {"quality_pass": "yes"}}
    with pytest.raises(jsonschema.ValidationError) as caught:
        jsonschema.validate(wrong, schema)
    assert list(caught.value.absolute_path) == ["evaluation", "quality_pass"]
