"""Suite validation: every problem named by its field path, valid suites planned."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fmbench.config import EmulatorTarget, OpenAITarget, SageMakerTarget, SuiteValidationError
from fmbench.plan import plan_suite
from fmbench.suite import load_suite, validate_suite_data

REPO = Path(__file__).resolve().parents[2]

VALID: dict[str, Any] = {
    "name": "unit",
    "targets": [{"name": "emu", "platform": "emulator", "emulator": {"profile": "g5-2xlarge"}}],
    "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
    "load": {"concurrency": [1, 4], "requests_per_level": 10},
    "slo": {"p95_latency_s": 5},
}


def suite_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def problems_of(data: Any) -> dict[str, str]:
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(data)
    return {p.path: p.reason for p in caught.value.problems}


def test_example_suites_are_valid() -> None:
    suite = load_suite(REPO / "examples/local-demo.yaml")
    assert [t.name for t in suite.targets] == ["g5-xlarge", "g5-2xlarge", "g5-12xlarge"]
    assert suite.load.concurrency == [1, 4, 16]
    assert [b.label for b in suite.workload.bins] == ["50-500", "500-2000"]


def test_every_problem_is_listed_with_its_path() -> None:
    data = suite_with(
        name="bad name!",
        targets=[
            {"name": "a", "platform": "emulator", "emulator": {"profile": "nope"}, "colour": "red"},
            {"name": "b", "platform": "openai", "endpoint_url": "localhost:8000"},
            {"name": "c", "platform": "warp-drive"},
        ],
        slo={"p95_latency_s": -1},
    )
    problems = problems_of(data)
    assert set(problems) == {
        "name",
        "targets.0.emulator.profile",
        "targets.0.colour",
        "targets.1.endpoint_url",
        "targets.2",
        "slo.p95_latency_s",
    }
    assert "unknown profile 'nope'" in problems["targets.0.emulator.profile"]
    assert "g5-2xlarge" in problems["targets.0.emulator.profile"]
    assert problems["targets.0.colour"].startswith("unknown field")
    assert "warp-drive" in problems["targets.2"]


def test_load_plan_needs_exactly_one_stop_rule() -> None:
    problems = problems_of(suite_with(load={"concurrency": [1], "requests_per_level": 5, "duration_s": 10}))
    assert problems == {"load": "give exactly one of requests_per_level or duration_s"}
    problems = problems_of(suite_with(load={"concurrency": [2, 2], "requests_per_level": 5}))
    assert problems == {"load.concurrency": "levels must be unique"}


def test_bins_must_be_ordered_and_disjoint() -> None:
    problems = problems_of(
        suite_with(
            workload={"bins": [{"min_tokens": 10, "max_tokens": 600}, {"min_tokens": 500, "max_tokens": 900}]}
        )
    )
    assert problems == {"workload": "bins 10-600 and 500-900 overlap"}
    problems = problems_of(suite_with(workload={"bins": [{"min_tokens": 10, "max_tokens": 5}]}))
    assert problems == {"workload.bins.0": "min_tokens must be below max_tokens"}


def test_empty_bin_and_missing_dataset_are_reported_before_anything_runs(tmp_path: Path) -> None:
    problems = problems_of(suite_with(workload={"bins": [{"min_tokens": 90000, "max_tokens": 100000}]}))
    assert list(problems) == ["workload.bins.0"]
    assert "no prompt of builtin:synthetic-qa has [90000, 100000) tokens" in problems["workload.bins.0"]
    problems = problems_of(
        suite_with(
            workload={"dataset": {"source": "missing.jsonl"}, "bins": [{"min_tokens": 1, "max_tokens": 9}]}
        )
    )
    assert list(problems) == ["workload.dataset.source"]
    assert "not found" in problems["workload.dataset.source"]


def test_template_fields_must_exist_in_the_dataset() -> None:
    problems = problems_of(
        suite_with(workload={"bins": [{"min_tokens": 1, "max_tokens": 9999}], "prompt_template": "{nope}"})
    )
    assert list(problems) == ["workload.dataset.source"]
    assert "lacks field(s) nope" in problems["workload.dataset.source"]


def test_duplicate_names_and_unknown_headline_bin() -> None:
    target = VALID["targets"][0]
    problems = problems_of(suite_with(targets=[target, target], report={"headline_bin": "huge"}))
    assert problems["targets.1.name"] == "duplicate target name 'emu'"
    assert problems["report.headline_bin"] == "'huge' is not a bin; bins: 50-500"


def test_a_duplicate_name_from_a_matrix_is_reported_where_the_matrix_is_written() -> None:
    # "emu-a" is written as a target and comes out of the matrix too: the duplicate is the matrix's.
    matrix = [{"base": {"name": "emu", "platform": "emulator"}, "vary": {"model": ["a"]}}]
    problems = problems_of(suite_with(targets=[{"name": "emu-a", "platform": "emulator"}], matrix=matrix))
    assert problems == {"matrix.0.base.name": "duplicate target name 'emu-a'"}


def test_matrix_expands_into_named_targets_and_reports_bad_combinations() -> None:
    matrix = [
        {
            "base": {
                "name": "llama",
                "platform": "sagemaker",
                "container": "lmi",
                "model_source": {"hf_model_id": "meta-llama/Llama-3.1-8B-Instruct"},
            },
            "vary": {"instance_type": ["ml.g5.2xlarge", "ml.g5.12xlarge"], "container": ["lmi", "tgi"]},
        }
    ]
    suite = validate_suite_data(suite_with(targets=[], matrix=matrix))
    targets = suite.expanded_targets()
    assert [t.name for t in targets] == [
        "llama-ml-g5-2xlarge-lmi",
        "llama-ml-g5-2xlarge-tgi",
        "llama-ml-g5-12xlarge-lmi",
        "llama-ml-g5-12xlarge-tgi",
    ]
    assert all(isinstance(t, SageMakerTarget) for t in targets)
    assert {(t.instance_type, t.container) for t in targets} == {
        ("ml.g5.2xlarge", "lmi"),
        ("ml.g5.2xlarge", "tgi"),
        ("ml.g5.12xlarge", "lmi"),
        ("ml.g5.12xlarge", "tgi"),
    }
    matrix[0]["base"]["instance_type"] = "ml.g5.2xlarge"
    matrix[0]["vary"] = {"instance_count": [1, 0]}
    problems = problems_of(suite_with(targets=[], matrix=matrix))
    assert list(problems) == ["matrix.0.vary.instance_count"]
    assert "instance_count=0" in problems["matrix.0.vary.instance_count"]


def test_platform_models() -> None:
    suite = validate_suite_data(
        suite_with(
            targets=[
                {"name": "e", "platform": "emulator"},
                {"name": "o", "platform": "openai", "endpoint_url": "http://127.0.0.1:8000/v1/"},
                {"name": "s", "platform": "sagemaker", "endpoint_name": "my-endpoint"},
                {"name": "b", "platform": "bedrock", "model_id": "anthropic.claude-3-haiku-20240307-v1:0"},
            ]
        )
    )
    emulator, openai, sagemaker, bedrock = suite.targets
    assert isinstance(emulator, EmulatorTarget) and emulator.emulator.profile == "g5-2xlarge"
    assert isinstance(openai, OpenAITarget) and openai.endpoint_url == "http://127.0.0.1:8000/v1"
    assert isinstance(sagemaker, SageMakerTarget) and sagemaker.endpoint_name == "my-endpoint"
    assert bedrock.platform == "bedrock"


def test_sagemaker_deploy_needs_source_instance_and_container() -> None:
    problems = problems_of(
        suite_with(targets=[{"name": "s", "platform": "sagemaker", "model_source": {"hf_model_id": "x"}}])
    )
    assert problems == {"targets.0": "instance_type is required to deploy an endpoint"}


def test_non_mapping_and_bad_yaml(tmp_path: Path) -> None:
    assert problems_of([1, 2]) == {"(suite)": "must be a mapping, got list"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(SuiteValidationError) as caught:
        load_suite(bad)
    assert caught.value.problems[0].path == "(file)"
    assert "line 2" in caught.value.problems[0].reason


# ------------------------------------------------------------------------------------ open-loop load plan


def load_with(**load: Any) -> dict[str, Any]:
    return suite_with(load={"requests_per_level": 10, **load})


def test_rates_and_concurrency_run_as_separate_sweeps() -> None:
    suite = validate_suite_data(load_with(concurrency=[1, 8], rates_per_s=[2.5, 10], max_in_flight=16))
    (branch,) = plan_suite(suite, storage_root="(none)", run_id="r").branches
    assert branch.load_point_count == 4  # (2 levels + 2 rates) x 1 bin
    assert (suite.load.arrival, suite.load.seed, suite.load.max_in_flight) == ("poisson", 0, 16)
    assert suite.load.connection_pool_size == 16  # the cap, above the highest concurrency
    assert suite.load.client_check.max_schedule_lag_p99_s == 0.05
    assert suite.load.client_check.max_runner_cpu_fraction == 0.9
    assert suite.load.client_check.max_loop_lag_p99_s == 0.02
    rate_only = validate_suite_data(load_with(rates_per_s=[10], request_timeout_s=30)).load
    assert rate_only.concurrency == []
    assert rate_only.connection_pool_size == 600  # uncapped: twice the arrivals of one request timeout


def test_open_loop_settings_without_rates_are_refused_by_field() -> None:
    problems = problems_of(load_with(concurrency=[1], max_in_flight=4, arrival="constant"))
    assert set(problems) == {"load.max_in_flight", "load.arrival"}
    assert problems["load.max_in_flight"].startswith("applies to rates_per_s (open loop) only")


def test_a_phase_is_counted_or_timed_not_both() -> None:
    problems = problems_of(
        load_with(concurrency=[1], warmup_requests=2, warmup_s=5, cooldown_requests=1, cooldown_s=5)
    )
    assert problems == {
        "load.warmup_s": "give warmup_requests or warmup_s, not both",
        "load.cooldown_s": "give cooldown_requests or cooldown_s, not both",
    }
    timed = validate_suite_data(load_with(rates_per_s=[1], warmup_s=5, cooldown_requests=3)).load
    assert timed.requests_per_point is None
    counted = validate_suite_data(load_with(rates_per_s=[1], warmup_requests=2, cooldown_requests=3)).load
    assert counted.requests_per_point == 15


def test_a_load_plan_needs_levels_or_rates_and_sane_rates() -> None:
    assert problems_of(load_with()) == {
        "load": "give concurrency (closed loop), rates_per_s (open loop), search, or several"
    }
    problems = problems_of(load_with(rates_per_s=[0, 5]))
    assert problems == {"load.rates_per_s": "rates must be above 0 and at most 100000 requests per second"}
    assert problems_of(load_with(rates_per_s=[5, 5])) == {"load.rates_per_s": "rates must be unique"}
    problems = problems_of(
        load_with(rates_per_s=[5], arrival="bursty", client_check={"max_runner_cpu_fraction": -1})
    )
    assert set(problems) == {"load.arrival", "load.client_check.max_runner_cpu_fraction"}


def test_a_ramp_up_spreads_closed_loop_workers_only() -> None:
    assert problems_of(load_with(rates_per_s=[5], ramp_up_s=2)) == {
        "load.ramp_up_s": "applies to concurrency levels (closed loop) only"
    }
    assert "load.ramp_up_s" in problems_of(load_with(concurrency=[4], ramp_up_s=-1))
    assert validate_suite_data(load_with(concurrency=[4], ramp_up_s=2)).load.ramp_up_s == 2


def test_a_capacity_search_is_validated_with_its_field_paths() -> None:
    search = {"mode": "concurrency", "start": 2, "max": 64, "max_points": 6}
    suite = validate_suite_data(load_with(search=search, ramp_up_s=1))  # ramp_up_s applies to its levels
    assert suite.load.search is not None and suite.load.search.level(8) == (8, None)
    assert suite.load.connection_pool_size == 64
    (branch,) = plan_suite(suite, storage_root="(none)", run_id="r").branches
    assert branch.load_point_count == 6  # an upper bound: the search may stop sooner
    assert branch.slo == suite.slo  # the runner judges the search by the suite's SLO
    rate = validate_suite_data(load_with(search={"mode": "rate", "start": 0.5, "max": 20}, max_in_flight=8))
    assert rate.load.search is not None and rate.load.search.level(2.5) == (None, 2.5)

    assert problems_of(load_with(concurrency=[1], search=search)) == {
        "load.search": "a concurrency search and concurrency levels would measure the same levels twice: "
        "give one"
    }
    assert problems_of(load_with(search={**search, "start": 100})) == {
        "load.search": "start 100 is above max 64"
    }
    assert problems_of(load_with(search={**search, "start": 1.5})) == {
        "load.search": "concurrency start and max must be whole numbers between 1 and 4096"
    }
    problems = problems_of(load_with(search={**search, "max_points": 0, "tolerance": 1.5, "colour": 1}))
    assert set(problems) == {"load.search.max_points", "load.search.tolerance", "load.search.colour"}
    assert set(problems_of(load_with(search={"mode": "rate", "start": 1, "max": 2}, ramp_up_s=1))) == {
        "load.ramp_up_s"
    }


def test_a_capacity_plan_needs_positive_unique_targets() -> None:
    suite = validate_suite_data(suite_with(capacity={"target_requests_per_minute": [100, 2500.5]}))
    assert suite.capacity is not None and suite.capacity.target_requests_per_minute == [100, 2500.5]
    assert set(problems_of(suite_with(capacity={"target_requests_per_minute": [0]}))) == {
        "capacity.target_requests_per_minute"
    }
    assert set(problems_of(suite_with(capacity={"target_requests_per_minute": []}))) == {
        "capacity.target_requests_per_minute"
    }
    assert set(problems_of(suite_with(capacity={"target_requests_per_minute": [5, 5]}))) == {
        "capacity.target_requests_per_minute"
    }


def test_capacity_search_example_is_valid() -> None:
    suite = load_suite(REPO / "examples/capacity-search.yaml")
    assert suite.load.search is not None and suite.capacity is not None
