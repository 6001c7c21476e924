"""The report's "Server-side metrics" section: the endpoint's own figures beside the client's, per load point.

Two tables, each shown only when some branch has its figures: servers scraped over Prometheus (vLLM's
metrics; the emulator speaks them) and endpoints measured by CloudWatch (SageMaker, Bedrock). Each row is
looked up by branch id and load point key, never by position. Definitions: docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

from report.formatting import load_label, md, number, percent, seconds
from report.server_metrics import ServerPoint
from report.view import LoadPointView, ReportView

NONE = "n/a"


def _pair(point: ServerPoint, mean: str, largest: str, digits: int = 2) -> str:
    if point[mean] is None:
        return NONE
    return f"{number(point[mean], digits)} / {number(point[largest], digits)}"


def _difference(client: Any, server: Any) -> str:
    if client is None or server is None:
        return NONE
    return seconds(client - server)


def _points(view: ReportView) -> list[tuple[str, ServerPoint, LoadPointView | None]]:
    """(target name, server figures, client figures) in the report's branch and load-point order."""
    server = view.server
    if server is None:
        return []
    found = []
    for branch in view.branches:
        for key in sorted({*branch.measured, *branch.not_measured}, key=lambda k: k.display_order(view.bins)):
            point = server.point(branch.branch_id, key.concurrency, key.request_rate_per_s, key.payload_bin)
            if point is not None:
                found.append((branch.target_name, point, branch.measured.get(key)))
    return found


def prometheus_rows(view: ReportView) -> list[list[str]]:
    rows = []
    for target, point, client in _points(view):
        if point["scrapes"] is None:
            continue
        hit_rate = point["prefix_cache_hit_rate"]  # None where the server counts no prefix-cache queries
        rows.append(
            [
                md(target),
                load_label(point.concurrency, point.request_rate_per_s),
                md(point.payload_bin),
                str(int(point["scrapes"])),
                _pair(point, "running_mean", "running_max"),
                _pair(point, "waiting_mean", "waiting_max"),
                _pair(point, "kv_cache_usage_mean", "kv_cache_usage_max", 3),
                percent(hit_rate),
                seconds(point["server_ttft_mean_s"]),
                seconds(client["ttft_p50_s"] if client is not None else None),
            ]
        )
    return rows


def cloudwatch_rows(view: ReportView) -> list[list[str]]:
    rows = []
    for target, point, client in _points(view):
        if point["cloudwatch_periods"] is None:
            continue
        server_latency = point["model_latency_mean_s"]
        if server_latency is None:
            server_latency = point["invocation_latency_mean_s"]
        client_p50 = client["latency_p50_s"] if client is not None else None
        errors = point["invocation_errors"]
        throttles = point["throttles"]
        rows.append(
            [
                md(target),
                load_label(point.concurrency, point.request_rate_per_s),
                md(point.payload_bin),
                str(int(point["cloudwatch_periods"])),
                seconds(client_p50),
                seconds(server_latency),
                _difference(client_p50, server_latency),
                seconds(point["overhead_latency_mean_s"]),
                number(point["invocations"], 6),
                number(None if errors is None and throttles is None else (errors or 0) + (throttles or 0), 6),
                number(point["gpu_utilization_mean"], 3),
                number(point["cpu_utilization_mean"], 3),
            ]
        )
    return rows


PROMETHEUS_HEADER = (
    "| Target | Load | Payload bin | Scrapes | Running mean / max | Waiting mean / max "
    "| KV-cache usage mean / max | Prefix-cache hit rate | Server TTFT mean (s) | Client TTFT p50 (s) |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
)
CLOUDWATCH_HEADER = (
    "| Target | Load | Payload bin | Minutes | Client latency p50 (s) | Server latency mean (s) "
    "| Client p50 - server mean (s) | Overhead latency mean (s) | Invocations | Errors and throttles "
    "| GPU utilization mean (%) | CPU utilization mean (%) |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _table(header: str, rows: list[list[str]]) -> str:
    return "\n".join([header, *("| " + " | ".join(row) + " |" for row in rows)])


def server_metrics_markdown(view: ReportView) -> str:
    """The section's Markdown, or "" when no branch has server-side figures."""
    prometheus, cloudwatch = prometheus_rows(view), cloudwatch_rows(view)
    if not prometheus and not cloudwatch:
        return ""
    parts = [
        "## Server-side metrics",
        "What the endpoint itself reported during each load point, beside the client's figures. The two "
        "sides measure different spans and sample differently (docs/metrics.md, section Server-side "
        "metrics, defines each figure and how it misleads): read a difference as a hint, not a measurement.",
    ]
    if prometheus:
        parts += [
            "### Scraped from the server's /metrics",
            "Requests running and waiting and the KV-cache usage (1 = full) are means and maxima over the "
            "scrapes of the load point (warm-up and cool-down included); the prefix-cache hit rate and the "
            "server's mean TTFT are the counters' change from the point's first scrape to its last.",
            _table(PROMETHEUS_HEADER, prometheus),
        ]
    if cloudwatch:
        parts += [
            "### CloudWatch (SageMaker, Bedrock)",
            "One-minute datapoints overlapping the load point's measured window. The server's latency is "
            "SageMaker's ModelLatency (the container's time) or Bedrock's InvocationLatency; the client's "
            "p50 minus it is roughly the network and the platform's own overhead.",
            _table(CLOUDWATCH_HEADER, cloudwatch),
        ]
    return "\n\n".join(parts)
