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


# TGI's page as its Rust exporter writes it (counters without "_total", no model label), cut down.
TGI_PAGE = """\
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 3
# TYPE tgi_queue_size gauge
tgi_queue_size 5
# TYPE tgi_batch_current_max_tokens gauge
tgi_batch_current_max_tokens 4096
# TYPE tgi_request_count counter
tgi_request_count 45
# TYPE tgi_request_success counter
tgi_request_success 42
# TYPE tgi_request_input_length histogram
tgi_request_input_length_bucket{le="100"} 10
tgi_request_input_length_bucket{le="+Inf"} 45
tgi_request_input_length_sum 9000
tgi_request_input_length_count 45
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_bucket{le="+Inf"} 42
tgi_request_generated_tokens_sum 1300
tgi_request_generated_tokens_count 42
# TYPE tgi_request_duration histogram
tgi_request_duration_bucket{le="+Inf"} 42
tgi_request_duration_sum 84.5
tgi_request_duration_count 42
# TYPE tgi_request_queue_duration histogram
tgi_request_queue_duration_bucket{le="+Inf"} 45
tgi_request_queue_duration_sum 3.0
tgi_request_queue_duration_count 45
"""
# SGLang's page (python/sglang/srt/metrics), cut down: cached tokens per cache source.
SGLANG_PAGE = """\
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="qwen"} 7.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="qwen"} 2.0
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="qwen"} 0.28
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="qwen"} 0.5
# TYPE sglang:prompt_tokens counter
sglang:prompt_tokens_total{model_name="qwen"} 4096.0
# TYPE sglang:cached_tokens counter
sglang:cached_tokens_total{cache_source="device",model_name="qwen"} 3000.0
sglang:cached_tokens_total{cache_source="host",model_name="qwen"} 168.0
# TYPE sglang:generation_tokens counter
sglang:generation_tokens_total{model_name="qwen"} 800.0
# TYPE sglang:num_requests counter
sglang:num_requests_total{model_name="qwen"} 11.0
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="qwen"} 11.0
sglang:time_to_first_token_seconds_sum{model_name="qwen"} 1.1
sglang:time_to_first_token_seconds_count{model_name="qwen"} 11.0
# TYPE sglang:e2e_request_latency_seconds histogram
sglang:e2e_request_latency_seconds_bucket{le="+Inf",model_name="qwen"} 11.0
sglang:e2e_request_latency_seconds_sum{model_name="qwen"} 22.0
sglang:e2e_request_latency_seconds_count{model_name="qwen"} 11.0
"""


def _by_metric(page: str) -> dict[str, list[tuple[float, dict[str, str]]]]:
    found: dict[str, list[tuple[float, dict[str, str]]]] = {}
    for row in parse_exposition(page, 1.0, POINT):
        found.setdefault(row.metric, []).append((row.value, row.labels))
    return found


def test_a_tgi_page_is_read_under_the_vllm_names_it_stands_for() -> None:
    found = _by_metric(TGI_PAGE)
    values = {metric: [v for v, _ in pairs] for metric, pairs in found.items()}
    assert values == {
        "vllm:num_requests_running": [3.0],
        "vllm:num_requests_waiting": [5.0],
        "vllm:request_success_total": [42.0],
        "vllm:prompt_tokens_total": [9000.0],
        "vllm:generation_tokens_total": [1300.0],
        "vllm:e2e_request_latency_seconds_sum": [84.5],
        "vllm:e2e_request_latency_seconds_count": [42.0],
    }  # no TTFT, KV-cache or prefix-cache figure; queue time and request count are not read
    assert found["vllm:num_requests_waiting"][0][1] == {"server_kind": "tgi", "exposed_as": "tgi_queue_size"}
    assert found["vllm:prompt_tokens_total"][0][1]["exposed_as"] == "tgi_request_input_length_sum"


def test_an_sglang_page_is_read_under_the_vllm_names_it_stands_for() -> None:
    found = _by_metric(SGLANG_PAGE)
    total = {metric: sum(v for v, _ in pairs) for metric, pairs in found.items()}
    assert total == {
        "vllm:num_requests_running": 7.0,
        "vllm:num_requests_waiting": 2.0,
        "vllm:kv_cache_usage_perc": 0.28,
        "vllm:prompt_tokens_total": 4096.0,
        "vllm:prefix_cache_queries_total": 4096.0,
        "vllm:prefix_cache_hits_total": 3168.0,  # device and host, added up as the SQL does
        "vllm:generation_tokens_total": 800.0,
        "vllm:request_success_total": 11.0,
        "vllm:time_to_first_token_seconds_sum": 1.1,
        "vllm:time_to_first_token_seconds_count": 11.0,
        "vllm:e2e_request_latency_seconds_sum": 22.0,
        "vllm:e2e_request_latency_seconds_count": 11.0,
    }  # the windowed cache_hit_rate gauge is not read: the counters give the point's own rate
    assert {labels["cache_source"] for _, labels in found["vllm:prefix_cache_hits_total"]} == {
        "device",
        "host",
    }
    assert {labels["server_kind"] for pairs in found.values() for _, labels in pairs} == {"sglang"}
    assert found["vllm:kv_cache_usage_perc"][0][1] == {
        "model_name": "qwen",
        "server_kind": "sglang",
        "exposed_as": "sglang:token_usage",
    }


def test_a_page_with_vllm_families_is_read_as_vllm_only() -> None:
    rows = parse_exposition(PAGE + SGLANG_PAGE, 1.0, POINT)
    assert {row.metric for row in rows} == {row.metric for row in parse_exposition(PAGE, 1.0, POINT)}
    assert all("server_kind" not in row.labels for row in rows)


def test_an_emulator_target_picks_its_metric_dialect_and_a_wrong_one_is_refused() -> None:
    spec = spec_of({"platform": "emulator", "emulator": {"metrics_dialect": "sglang"}}, replace=True)
    assert spec.target.emulator.metrics_dialect == "sglang"
    data = copy.deepcopy(SUITE)
    data["targets"][0] = {"name": "emu", "platform": "emulator", "emulator": {"metrics_dialect": "triton"}}
    with pytest.raises(SuiteValidationError) as caught:
        validate_suite_data(data)
    assert [p.path for p in caught.value.problems] == ["targets.0.emulator.metrics_dialect"]
