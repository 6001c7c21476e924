"""Suites that YAML, JSON and lax number parsing would let through, each refused at the field it is in."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from time import perf_counter
from typing import Any

import pytest

from fmbench.config import MAX_PHASE_S, MAX_REQUESTS_PER_PHASE, SuiteValidationError
from fmbench.suite import (
    MAX_SUITE_BYTES,
    MAX_SUITE_DEPTH,
    load_suite,
    parse_suite_text,
    unset_api_keys,
    validate_suite_data,
)

VALID: dict[str, Any] = {
    "name": "unit",
    "targets": [
        {
            "name": "vllm",
            "platform": "openai",
            "endpoint_url": "http://127.0.0.1:8000/v1",
            "instance_type": "ml.g5.2xlarge",
        }
    ],
    "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
    "load": {"concurrency": [1, 4], "requests_per_level": 10},
}

VALID_YAML = """\
name: unit
targets:
  - {name: vllm, platform: openai, endpoint_url: "http://127.0.0.1:8000/v1"}
workload:
  bins: [{min_tokens: 50, max_tokens: 500}]
load:
  concurrency: [1]
  requests_per_level: 4
"""


def with_changes(section: str, **changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data[section] = {**data.get(section, {}), **changes}
    return data


def problems_of(data: Any) -> dict[str, str]:
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(data)
    return {p.path: p.reason for p in caught.value.problems}


def text_problems(text: str) -> dict[str, str]:
    with pytest.raises(SuiteValidationError) as caught:
        parse_suite_text(text)
    return {p.path: p.reason for p in caught.value.problems}


def test_the_base_suite_is_valid() -> None:
    assert validate_suite_data(copy.deepcopy(VALID)).load.requests_per_level == 10
    assert parse_suite_text(VALID_YAML)["load"]["requests_per_level"] == 4


def test_a_second_load_block_is_a_duplicate_key_with_both_lines() -> None:
    text = VALID_YAML + "load:\n  concurrency: [1]\n  requests_per_level: 100000\n"
    assert text_problems(text) == {
        "load": "duplicate key at line 9 (first at line 6); YAML would keep only the last one"
    }


def test_duplicate_keys_are_found_at_any_depth_and_in_json() -> None:
    nested = VALID_YAML.replace("requests_per_level: 4", "requests_per_level: 4\n  concurrency: [8]")
    assert list(text_problems(nested)) == ["load.concurrency"]
    in_list = VALID_YAML.replace("{name: vllm,", "{name: vllm, name: other,")
    assert list(text_problems(in_list)) == ["targets.0.name"]
    assert list(text_problems('{"name": "a", "workload": {"seed": 1, "seed": 2}}')) == ["workload.seed"]


def test_a_suite_nested_thousands_deep_is_refused_without_a_traceback() -> None:
    for text in ("[" * 5000 + "]" * 5000, '{"a": ' * 5000 + "1" + "}" * 5000, "a: " * 5000 + "1"):
        problems = text_problems(text)
        assert list(problems) == ["(file)"], problems
    just_too_deep = "[" * (MAX_SUITE_DEPTH + 2) + "]" * (MAX_SUITE_DEPTH + 2)
    assert text_problems(just_too_deep) == {"(file)": f"nested deeper than {MAX_SUITE_DEPTH} levels (line 1)"}


def test_a_large_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    suite = tmp_path / "big.yaml"
    suite.write_bytes(VALID_YAML.encode() + b"#" * MAX_SUITE_BYTES)
    started_s = perf_counter()
    with pytest.raises(SuiteValidationError) as caught:
        load_suite(suite)
    assert perf_counter() - started_s < 1.0
    assert [str(p) for p in caught.value.problems] == [
        f"(file): larger than {MAX_SUITE_BYTES:,} bytes: not a suite"
    ]


def test_a_file_that_is_not_utf8_names_the_byte_and_its_offset(tmp_path: Path) -> None:
    suite = tmp_path / "latin1.yaml"
    suite.write_bytes(VALID_YAML.replace("name: unit", "name: caf\xe9").encode("latin-1"))
    with pytest.raises(SuiteValidationError) as caught:
        load_suite(suite)
    assert [str(p) for p in caught.value.problems] == ["(file): not UTF-8: byte 0xe9 at offset 9"]


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_slos_and_prices_must_be_finite(value: float) -> None:
    assert problems_of(with_changes("slo", p95_latency_s=value, p95_ttft_s=value)) == {
        "slo.p95_latency_s": "Input should be a finite number",
        "slo.p95_ttft_s": "Input should be a finite number",
    }
    priced = with_changes("pricing", instance_price_per_hour_usd={"ml.g5.2xlarge": value})
    assert problems_of(priced) == {
        "pricing.instance_price_per_hour_usd.ml.g5.2xlarge": "Input should be a finite number"
    }


def test_a_negative_price_is_refused() -> None:
    priced = with_changes("pricing", instance_price_per_hour_usd={"ml.g5.2xlarge": -1.0})
    assert problems_of(priced) == {
        "pricing.instance_price_per_hour_usd.ml.g5.2xlarge": "Input should be greater than or equal to 0"
    }


def test_a_price_no_target_uses_is_refused_with_the_nearest_instance_type() -> None:
    priced = with_changes(
        "pricing", instance_price_per_hour_usd={"ml.g5.2xlarg": 1.0, "ml.p4d.24xlarge": 30.0}
    )
    assert problems_of(priced) == {
        "pricing.instance_price_per_hour_usd.ml.g5.2xlarg": "no target uses this instance type; "
        "did you mean ml.g5.2xlarge?",
        "pricing.instance_price_per_hour_usd.ml.p4d.24xlarge": "no target uses this instance type; "
        "in use: ml.g5.2xlarge",
    }
    used = with_changes("pricing", instance_price_per_hour_usd={"ml.g5.2xlarge": 1.0})
    assert validate_suite_data(used).pricing.instance_price_per_hour_usd == {"ml.g5.2xlarge": 1.0}


def test_an_emulator_profile_counts_as_using_its_instance_type() -> None:
    data = copy.deepcopy(VALID)
    data["targets"] = [{"name": "emu", "platform": "emulator", "emulator": {"profile": "g5-xlarge"}}]
    data["pricing"] = {"instance_price_per_hour_usd": {"ml.g5.xlarge": 0.5}}
    assert validate_suite_data(data).pricing.instance_price_per_hour_usd == {"ml.g5.xlarge": 0.5}


@pytest.mark.parametrize("instance_type", ["ml.garbage", "a b c", "g5.2xlarge", "ml.g5.2xlarge "])
def test_an_instance_type_must_have_the_shape_of_one(instance_type: str) -> None:
    data = copy.deepcopy(VALID)
    data["targets"][0]["instance_type"] = instance_type
    reason = "not an instance type: must look like ml.FAMILY.SIZE, e.g. ml.g5.2xlarge"
    assert problems_of(data) == {"targets.0.instance_type": reason}
    priced = with_changes("pricing", instance_price_per_hour_usd={instance_type: 1.0})
    if instance_type == "g5.2xlarge":  # a price key may be an ec2 target's type (docs/ec2.md)
        key, reason = (
            f"pricing.instance_price_per_hour_usd.{instance_type}",
            "no target uses this instance type",
        )
        assert problems_of(priced)[key].startswith(reason)
        return
    reason = (
        "not an instance type: must look like ml.FAMILY.SIZE (SageMaker) or FAMILY.SIZE (an ec2 target's), "
        "e.g. ml.g5.2xlarge, g5.2xlarge"
    )
    assert problems_of(priced) == {f"pricing.instance_price_per_hour_usd.{instance_type}.[key]": reason}


@pytest.mark.parametrize(
    ("changes", "path", "bound"),
    [
        ({"requests_per_level": 2**70}, "load.requests_per_level", MAX_REQUESTS_PER_PHASE),
        ({"requests_per_level": None, "duration_s": 1e12}, "load.duration_s", MAX_PHASE_S),
        ({"warmup_requests": 10**7}, "load.warmup_requests", MAX_REQUESTS_PER_PHASE),
        ({"cooldown_s": 1e9}, "load.cooldown_s", MAX_PHASE_S),
    ],
)
def test_sizes_have_an_upper_bound(changes: dict[str, Any], path: str, bound: float) -> None:
    assert problems_of(with_changes("load", **changes)) == {
        path: f"Input should be less than or equal to {int(bound)}"
    }


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("load", "requests_per_level"),
        ("load", "request_timeout_s"),
        ("execution", "max_parallel_branches"),
    ],
)
@pytest.mark.parametrize("value", [True, False])
def test_a_yaml_boolean_is_no_number(section: str, field: str, value: bool) -> None:
    assert problems_of(with_changes(section, **{field: value})) == {
        f"{section}.{field}": "must be a number, not a boolean (yes/no/true/false/on/off)"
    }


def test_a_boolean_in_a_list_of_numbers_is_named_by_its_index() -> None:
    assert problems_of(with_changes("load", concurrency=[1, True])) == {
        "load.concurrency.1": "must be a number, not a boolean (yes/no/true/false/on/off)"
    }


def test_yes_read_from_yaml_is_refused_not_read_as_one() -> None:
    data = parse_suite_text(VALID_YAML.replace("requests_per_level: 4", "requests_per_level: yes"))
    assert problems_of(data) == {
        "load.requests_per_level": "must be a number, not a boolean (yes/no/true/false/on/off)"
    }


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        ("{question:>5000000}", "{question:>5000000}"),
        ("Q: {question!r}", "{question!r}"),
        ("{question!s:.3}", "{question!s:.3}"),
    ],
)
def test_a_template_field_takes_no_format_spec_or_conversion(template: str, shown: str) -> None:
    started_s = perf_counter()
    problems = problems_of(with_changes("workload", prompt_template=template))
    assert perf_counter() - started_s < 2.0  # refused before anything is formatted
    assert problems == {
        "workload.prompt_template": f"template fields take no format spec or conversion, got {shown}"
    }


def test_an_unset_api_key_variable_is_named_with_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    data = copy.deepcopy(VALID)
    data["targets"][0]["api_key_env"] = "FMBENCH_TEST_KEY"
    data["matrix"] = [
        {
            "base": {"name": "m", "platform": "openai", "endpoint_url": "http://127.0.0.1:9/v1"},
            "vary": {"api_key_env": ["FMBENCH_TEST_KEY", "FMBENCH_OTHER_KEY"]},
        }
    ]
    suite = validate_suite_data(data)  # the suite itself is valid: the variable is the machine's
    monkeypatch.delenv("FMBENCH_TEST_KEY", raising=False)
    monkeypatch.setenv("FMBENCH_OTHER_KEY", "secret")
    assert {str(p) for p in unset_api_keys(suite, {"FMBENCH_OTHER_KEY": "secret"})} == {
        "targets.0.api_key_env: environment variable FMBENCH_TEST_KEY is not set",
        "matrix.0.vary.api_key_env: environment variable FMBENCH_TEST_KEY is not set",
    }
    assert unset_api_keys(suite, {"FMBENCH_TEST_KEY": "k", "FMBENCH_OTHER_KEY": "k"}) == []


def _dataset_suite(tmp_path: Path, source: str) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data["workload"] = {
        "dataset": {"source": source, "format": "jsonl"},
        "prompt_template": "{question}",
        "bins": [{"min_tokens": 1, "max_tokens": 500}],
    }
    return data


def test_a_dataset_folder_or_device_is_named_for_what_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    assert problems_of(_dataset_suite(tmp_path, str(folder))) == {
        "workload.dataset.source": f"{folder} is a folder, not a dataset file"
    }
    started_s = perf_counter()
    assert problems_of(_dataset_suite(tmp_path, "/dev/zero")) == {
        "workload.dataset.source": "/dev/zero is not a regular file (a device, pipe or socket)"
    }
    assert perf_counter() - started_s < 5.0  # not read at all
    assert problems_of(_dataset_suite(tmp_path, str(tmp_path / "absent.jsonl"))) == {
        "workload.dataset.source": f"dataset file not found: {tmp_path / 'absent.jsonl'}"
    }


def test_a_dataset_that_is_not_utf8_is_reported_at_its_source(tmp_path: Path) -> None:
    dataset = tmp_path / "latin1.jsonl"
    dataset.write_bytes('{"question": "caf\xe9?"}\n'.encode("latin-1"))
    problems = problems_of(_dataset_suite(tmp_path, str(dataset)))
    assert list(problems) == ["workload.dataset.source"]
    assert "UTF-8" in problems["workload.dataset.source"]


def test_per_request_slos_are_positive_finite_seconds() -> None:
    changed = with_changes("slo", request_ttft_s=0, request_tpot_s=-0.01, request_latency_s=math.inf)
    assert problems_of(changed) == {
        "slo.request_ttft_s": "Input should be greater than 0",
        "slo.request_tpot_s": "Input should be greater than 0",
        "slo.request_latency_s": "Input should be a finite number",
    }
