"""report/sql/server_metrics.sql in DuckDB against the same figures computed with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmbench import layout
from fmbench.server_metrics import MetricRow, PointKey, write_rows, write_table_to
from report.server_metrics import read_server_metrics, server_metrics_summary, server_metrics_view

RUN = "run-1"
C4 = PointKey("concurrency", 4, None, "50-500")
R2 = PointKey("rate", None, 2.5, "50-500")
MODEL = {"model_name": "m"}


def scrapes(rng: np.random.Generator, point: PointKey, start_s: float, n: int) -> dict[str, np.ndarray]:
    """A point's scrapes: gauges drawn at random, counters as running sums of random increments."""
    times = start_s + np.arange(n, dtype=float)
    return {
        "t": times,
        "running": rng.integers(0, 5, n).astype(float),
        "waiting": rng.integers(0, 3, n).astype(float),
        "kv": rng.random(n),
        "queries": np.cumsum(rng.integers(100, 200, n)).astype(float),
        "hits": np.cumsum(rng.integers(0, 100, n)).astype(float),
        "generated": np.cumsum(rng.integers(0, 50, n)).astype(float),
        "stop": np.cumsum(rng.integers(0, 3, n)).astype(float),
        "length": np.cumsum(rng.integers(0, 3, n)).astype(float),
        "ttft_sum": np.cumsum(rng.random(n)),
        "ttft_count": np.cumsum(rng.integers(1, 4, n)).astype(float),
    }


def prometheus_rows(point: PointKey, s: dict[str, np.ndarray]) -> list[MetricRow]:
    rows = []
    for i, t in enumerate(s["t"]):

        def row(metric: str, value: float, t: float = float(t), **labels: str) -> MetricRow:
            return MetricRow("prometheus", point, t, metric, {**MODEL, **labels}, float(value))

        rows += [
            row("vllm:num_requests_running", s["running"][i]),
            row("vllm:num_requests_waiting", s["waiting"][i]),
            row("vllm:kv_cache_usage_perc", s["kv"][i]),
            row("vllm:prefix_cache_queries_total", s["queries"][i]),
            row("vllm:prefix_cache_hits_total", s["hits"][i]),
            row("vllm:generation_tokens_total", s["generated"][i]),
            row("vllm:request_success_total", s["stop"][i], finished_reason="stop"),
            row("vllm:request_success_total", s["length"][i], finished_reason="length"),
            row("vllm:time_to_first_token_seconds_sum", s["ttft_sum"][i]),
            row("vllm:time_to_first_token_seconds_count", s["ttft_count"][i]),
        ]
    return rows


def cloudwatch_rows(
    point: PointKey, minutes: np.ndarray, per_minute: dict[str, np.ndarray]
) -> list[MetricRow]:
    labels = {"namespace": "AWS/SageMaker", "EndpointName": "e", "VariantName": "AllTraffic"}
    names = {
        "latency_sum": ("ModelLatency", "Sum"),
        "latency_n": ("ModelLatency", "SampleCount"),
        "latency_max": ("ModelLatency", "Maximum"),
        "invocations": ("Invocations", "Sum"),
        "e4": ("Invocation4XXErrors", "Sum"),
        "e5": ("Invocation5XXErrors", "Sum"),
        "gpu": ("GPUUtilization", "Average"),
    }
    return [
        MetricRow("cloudwatch", point, float(t), metric, labels, float(per_minute[key][i]), statistic, 60)
        for key, (metric, statistic) in names.items()
        for i, t in enumerate(minutes)
    ]


def test_the_summary_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    root = str(tmp_path)
    a, b = scrapes(rng, C4, 1000.0, 9), scrapes(rng, R2, 2000.0, 5)
    write_rows(root, RUN, "vllm-1", prometheus_rows(C4, a))
    write_rows(root, RUN, "vllm-1", prometheus_rows(R2, b))
    minutes = np.array([960.0, 1020.0, 1080.0])
    cw = {
        "latency_sum": rng.random(3) * 10,
        "latency_n": rng.integers(5, 20, 3).astype(float),
        "latency_max": rng.random(3),
        "invocations": rng.integers(5, 20, 3).astype(float),
        "e4": rng.integers(0, 2, 3).astype(float),
        "e5": rng.integers(0, 2, 3).astype(float),
        "gpu": rng.random(3) * 100,
    }
    uri = layout.server_metrics_cloudwatch_uri(root, RUN, "sm-1")
    write_table_to(uri, cloudwatch_rows(C4, minutes, cw))
    # Another run's rows in the same folder tree are not this run's.
    write_rows(root, "run-2", "vllm-1", prometheus_rows(C4, scrapes(rng, C4, 0.0, 3)))

    summary = server_metrics_summary(read_server_metrics(root, RUN), RUN)
    assert len(summary) == 3
    rows = {(r["branch_id"], r["load_mode"]): r for r in summary.to_dict(orient="records")}

    for key, s in ((("vllm-1", "concurrency"), a), (("vllm-1", "rate"), b)):
        row = rows[key]
        assert row["scrapes"] == len(s["t"])
        assert row["running_mean"] == pytest.approx(np.mean(s["running"]))
        assert row["running_max"] == np.max(s["running"])
        assert row["waiting_mean"] == pytest.approx(np.mean(s["waiting"]))
        assert row["waiting_max"] == np.max(s["waiting"])
        assert row["kv_cache_usage_mean"] == pytest.approx(np.mean(s["kv"]))
        assert row["kv_cache_usage_max"] == pytest.approx(np.max(s["kv"]))
        hits, queries = np.diff(s["hits"][[0, -1]])[0], np.diff(s["queries"][[0, -1]])[0]
        assert row["prefix_cache_hit_rate"] == pytest.approx(hits / queries)
        assert row["server_generation_tokens"] == s["generated"][-1] - s["generated"][0]
        succeeded = s["stop"] + s["length"]
        assert row["server_requests_succeeded"] == succeeded[-1] - succeeded[0]
        ttft = (s["ttft_sum"][-1] - s["ttft_sum"][0]) / (s["ttft_count"][-1] - s["ttft_count"][0])
        assert row["server_ttft_mean_s"] == pytest.approx(ttft)
        assert row["model_latency_mean_s"] is None or np.isnan(row["model_latency_mean_s"])
    assert rows[("vllm-1", "rate")]["request_rate_per_s"] == 2.5

    sm = rows[("sm-1", "concurrency")]
    assert sm["cloudwatch_periods"] == 3
    assert sm["model_latency_mean_s"] == pytest.approx(cw["latency_sum"].sum() / cw["latency_n"].sum())
    assert sm["model_latency_max_s"] == pytest.approx(cw["latency_max"].max())
    assert sm["invocations"] == cw["invocations"].sum()
    assert sm["invocation_errors"] == cw["e4"].sum() + cw["e5"].sum()
    assert sm["gpu_utilization_mean"] == pytest.approx(cw["gpu"].mean())
    assert np.isnan(sm["running_mean"])


def test_the_view_keeps_points_by_key_and_the_chart_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = str(tmp_path)
    a = scrapes(rng, C4, 1000.0, 4)
    write_rows(root, RUN, "vllm-1", prometheus_rows(C4, a))
    view = server_metrics_view(root, RUN)
    assert view is not None
    point = view.point("vllm-1", 4, None, "50-500")
    assert point is not None and point["running_max"] == np.max(a["running"])
    assert view.point("vllm-1", 8, None, "50-500") is None
    running = [s.value for s in view.series if s.label == "running requests"]
    assert running == list(a["running"])
    assert server_metrics_view(root, "no-such-run") is None
