"""A /metrics page into rows, the known families only; the suite's server_metrics options, their refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fmbench.config import SuiteValidationError
from fmbench.plan import plan_suite
from fmbench.runner import metrics_url
from fmbench.server_metrics import PointKey, default_metrics_url, parse_exposition
from fmbench.suite import validate_suite_data

POINT = PointKey("concurrency", 8, None, "50-500")
# A vLLM page in the text format, cut down: current and older names, a histogram, families we do not keep.
PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 7.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="llama"} 0.25
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 1200.0
vllm:prefix_cache_hits_created{engine="0",model_name="llama"} 1.7e9
# TYPE vllm:request_success counter
vllm:request_success_total{finished_reason="stop",model_name="llama"} 10.0
vllm:request_success_total{finished_reason="length",model_name="llama"} 3.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="llama"} 4.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama"} 13.0
vllm:time_to_first_token_seconds_count{model_name="llama"} 13.0
vllm:time_to_first_token_seconds_sum{model_name="llama"} 2.5
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_count{model_name="llama"} 99.0
# TYPE process_cpu_seconds counter
process_cpu_seconds_total 12.0
"""


def test_a_page_keeps_the_known_families_with_their_labels() -> None:
    rows = parse_exposition(PAGE, 123.0, POINT)
    found = {(row.metric, tuple(sorted(row.labels.items()))): row.value for row in rows}
    assert found == {
        ("vllm:num_requests_running", (("engine", "0"), ("model_name", "llama"))): 7.0,
        ("vllm:gpu_cache_usage_perc", (("model_name", "llama"),)): 0.25,
        ("vllm:prefix_cache_hits_total", (("engine", "0"), ("model_name", "llama"))): 1200.0,
        ("vllm:request_success_total", (("finished_reason", "stop"), ("model_name", "llama"))): 10.0,
        ("vllm:request_success_total", (("finished_reason", "length"), ("model_name", "llama"))): 3.0,
        ("vllm:time_to_first_token_seconds_count", (("model_name", "llama"),)): 13.0,
        ("vllm:time_to_first_token_seconds_sum", (("model_name", "llama"),)): 2.5,
    }
    assert {(row.source, row.point, row.sampled_epoch_s, row.statistic) for row in rows} == {
        ("prometheus", POINT, 123.0, None)
    }


def test_the_metrics_url_is_beside_the_api() -> None:
    assert default_metrics_url("http://h:8000/v1") == "http://h:8000/metrics"
    assert default_metrics_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert default_metrics_url("http://h:8000") == "http://h:8000/metrics"
    assert default_metrics_url("https://h/serving/v1") == "https://h/serving/metrics"


SUITE: dict[str, Any] = {
    "name": "unit",
    "targets": [{"name": "vllm", "platform": "openai", "endpoint_url": "http://127.0.0.1:8000/v1"}],
    "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
    "load": {"concurrency": [1], "requests_per_level": 4},
}


def spec_of(target: dict[str, Any] | None = None, *, replace: bool = False, **load: Any) -> Any:
    data = copy.deepcopy(SUITE)
    if replace:
        data["targets"][0] = {"name": "other", **(target or {})}
    else:
        data["targets"][0].update(target or {})
    data["load"].update(load)
    (spec,) = plan_suite(validate_suite_data(data), storage_root="/tmp/unused", run_id="r").branches
    return spec


def test_which_url_a_branch_scrapes() -> None:
    assert metrics_url(spec_of()) == "http://127.0.0.1:8000/metrics"
    assert metrics_url(spec_of({"metrics_url": "http://127.0.0.1:9400/m"})) == "http://127.0.0.1:9400/m"
    assert metrics_url(spec_of(server_metrics={"enabled": False})) is None
    emulator = spec_of({"platform": "emulator"}, replace=True)
    assert metrics_url(emulator, "http://127.0.0.1:5000") == "http://127.0.0.1:5000/metrics"
    bedrock = spec_of({"platform": "bedrock", "model_id": "m"}, replace=True)
    assert metrics_url(bedrock) is None


@pytest.mark.parametrize(
    ("target", "load", "path"),
    [
        ({"metrics_url": "ftp://h/metrics"}, {}, "targets.0.metrics_url"),
        ({}, {"server_metrics": {"scrape_interval_s": 0.01}}, "load.server_metrics.scrape_interval_s"),
        ({}, {"server_metrics": {"scrape_interval_s": 61}}, "load.server_metrics.scrape_interval_s"),
        ({}, {"server_metrics": {"every": 1}}, "load.server_metrics.every"),
    ],
)
def test_bad_options_are_refused_at_their_field(
    target: dict[str, Any], load: dict[str, Any], path: str
) -> None:
    data = copy.deepcopy(SUITE)
    data["targets"][0].update(target)
    data["load"].update(load)
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(data)
    assert [p.path for p in caught.value.problems] == [path]
