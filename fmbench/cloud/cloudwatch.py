"""SageMaker's and Bedrock's own CloudWatch metrics over each load point's window, as server-metric rows.

When: CloudWatch publishes a minute's datapoint one to a few minutes after the minute ends, so Teardown,
which runs as soon as the runner stops, would miss the last load point. The cloud Render step fetches
instead (``report.cloud.render_run``), after every branch's Teardown: the figures of an endpoint stay in
CloudWatch after it is deleted (15 days at one-minute resolution). The rows are written to one object per
branch (``layout.server_metrics_cloudwatch_uri``), replaced at every render, so a report-only re-render a few
minutes later gets the complete last minutes. docs/metrics.md, "Server-side metrics", says how they
mislead (one-minute periods spanning load points, the delay).

Windows come from the branch's records: the first send to the last end of a load point's measured
requests, widened to whole minutes (CloudWatch's period). Latencies are converted to seconds (SageMaker
reports microseconds, Bedrock milliseconds).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow.dataset as ds

from fmbench import layout, storage
from fmbench.cloud.aws import error_message
from fmbench.cloud.sagemaker import VARIANT_NAME
from fmbench.server_metrics import MetricRow, PointKey, write_table_to
from fmbench.spec import BranchSpec

logger = logging.getLogger(__name__)

PERIOD_S: Final = 60
_MAX_QUERIES: Final = 500  # GetMetricData's limit per call


@dataclass(frozen=True, slots=True)
class MetricQuery:
    """One CloudWatch metric and statistic; ``scale`` turns its unit into the row's."""

    namespace: str
    name: str
    statistic: str
    dimensions: tuple[tuple[str, str], ...]
    scale: float = 1.0


_SECONDS_PER_MICROSECOND: Final = 1e-6
_SECONDS_PER_MILLISECOND: Final = 1e-3


def sagemaker_queries(endpoint_name: str, variant_name: str = VARIANT_NAME) -> list[MetricQuery]:
    dims = (("EndpointName", endpoint_name), ("VariantName", variant_name))
    queries = [
        MetricQuery(
            "AWS/SageMaker", name, stat, dims, 1.0 if stat == "SampleCount" else _SECONDS_PER_MICROSECOND
        )
        for name in ("ModelLatency", "OverheadLatency")
        for stat in ("Sum", "SampleCount", "Maximum")
    ]
    queries += [
        MetricQuery("AWS/SageMaker", name, "Sum", dims)
        for name in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors")
    ]
    queries += [
        MetricQuery("/aws/sagemaker/Endpoints", name, stat, dims)
        for name in ("CPUUtilization", "MemoryUtilization", "GPUUtilization", "GPUMemoryUtilization")
        for stat in ("Average", "Maximum")
    ]
    return queries


def bedrock_queries(model_id: str) -> list[MetricQuery]:
    dims = (("ModelId", model_id),)
    queries = [
        MetricQuery("AWS/Bedrock", "InvocationLatency", "Sum", dims, _SECONDS_PER_MILLISECOND),
        MetricQuery("AWS/Bedrock", "InvocationLatency", "SampleCount", dims),
        MetricQuery("AWS/Bedrock", "InvocationLatency", "Maximum", dims, _SECONDS_PER_MILLISECOND),
    ]
    queries += [
        MetricQuery("AWS/Bedrock", name, "Sum", dims)
        for name in ("Invocations", "InvocationThrottles", "InputTokenCount", "OutputTokenCount")
    ]
    return queries


@dataclass(frozen=True, slots=True)
class PointWindow:
    point: PointKey
    start_epoch_s: float
    end_epoch_s: float


def load_point_windows(storage_root: str, run_id: str, branch_id: str) -> list[PointWindow]:
    """Each load point's measured window from the branch's records: first send to last end."""
    prefix = layout.records_prefix(storage_root, run_id, branch_id)
    filesystem, path = storage.resolve_filesystem(prefix)
    try:
        dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
        table = dataset.to_table(
            columns=[
                "load_mode",
                "concurrency",
                "request_rate_per_s",
                "payload_bin",
                "send_epoch_s",
                "end_epoch_s",
            ],
            filter=ds.field("phase") == "measured",
        )
    except (FileNotFoundError, OSError) as exc:
        logger.info("branch %s: no records for CloudWatch windows (%s)", branch_id, exc)
        return []
    windows: dict[PointKey, list[float]] = {}
    for row in table.to_pylist():
        key = PointKey(row["load_mode"], row["concurrency"], row["request_rate_per_s"], row["payload_bin"])
        bounds = windows.setdefault(key, [math.inf, -math.inf])
        bounds[0] = min(bounds[0], row["send_epoch_s"])
        bounds[1] = max(bounds[1], row["end_epoch_s"])
    return [PointWindow(key, start, end) for key, (start, end) in windows.items()]


def _minute_floor(epoch_s: float) -> float:
    return math.floor(epoch_s / PERIOD_S) * PERIOD_S


def _minute_ceil(epoch_s: float) -> float:
    return math.ceil(epoch_s / PERIOD_S) * PERIOD_S


def fetch_window(cloudwatch: Any, queries: list[MetricQuery], window: PointWindow) -> list[MetricRow]:
    """Every query's one-minute datapoints that overlap the window (GetMetricData, paginated)."""
    start = _minute_floor(window.start_epoch_s)
    end = max(_minute_ceil(window.end_epoch_s), start + PERIOD_S)
    rows: list[MetricRow] = []
    for first in range(0, len(queries), _MAX_QUERIES):
        batch = dict(enumerate(queries[first : first + _MAX_QUERIES]))
        request: dict[str, Any] = {
            "MetricDataQueries": [
                {
                    "Id": f"q{index}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": q.namespace,
                            "MetricName": q.name,
                            "Dimensions": [{"Name": k, "Value": v} for k, v in q.dimensions],
                        },
                        "Period": PERIOD_S,
                        "Stat": q.statistic,
                    },
                    "ReturnData": True,
                }
                for index, q in batch.items()
            ],
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "ScanBy": "TimestampAscending",
        }
        while True:
            answer = cloudwatch.get_metric_data(**request)
            for result in answer.get("MetricDataResults", []):
                q = batch[int(result["Id"][1:])]
                labels = {"namespace": q.namespace, **dict(q.dimensions)}
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=True):
                    rows.append(
                        MetricRow(
                            "cloudwatch",
                            window.point,
                            stamp.timestamp(),
                            q.name,
                            labels,
                            float(value) * q.scale,
                            statistic=q.statistic,
                            period_s=PERIOD_S,
                        )
                    )
            token = answer.get("NextToken")
            if not token:
                break
            request["NextToken"] = token
    return rows


def branch_queries(spec: BranchSpec) -> tuple[list[MetricQuery], str | None] | None:
    """The queries of a branch's endpoint and the region to ask, or None for a target CloudWatch does not
    measure (emulator, openai: their servers are scraped instead)."""
    target = spec.target
    if target.platform == "sagemaker":
        name = spec.sagemaker_endpoint_name or target.endpoint_name
        if name is None:
            return None
        deployment = spec.sagemaker_deployment
        region = target.region or (deployment.region if deployment is not None else None)
        return sagemaker_queries(name), region
    if target.platform == "bedrock":
        return bedrock_queries(target.model_id), target.region
    return None


def record_cloudwatch_metrics(spec: BranchSpec, cloudwatch_for: Callable[[str | None], Any]) -> int:
    """Fetch a branch's CloudWatch metrics over its load points and write them; returns the rows written.

    ``cloudwatch_for(region)`` makes the client. A failed call (a missing permission, throttling past the
    retries) is logged and the report goes on without these figures: they are beside the measurement.
    """
    found = branch_queries(spec)
    if found is None:
        return 0
    queries, region = found
    windows = load_point_windows(spec.storage_root, spec.run_id, spec.branch_id)
    if not windows:
        return 0
    cloudwatch = cloudwatch_for(region)
    rows: list[MetricRow] = []
    try:
        for window in windows:
            rows += fetch_window(cloudwatch, queries, window)
    except Exception as exc:
        if not hasattr(exc, "response"):
            raise
        logger.warning("branch %s: CloudWatch metrics not read: %s", spec.branch_id, error_message(exc))
        return 0
    if not rows:
        return 0
    uri = layout.server_metrics_cloudwatch_uri(spec.storage_root, spec.run_id, spec.branch_id)
    try:
        write_table_to(uri, rows)
    except OSError as exc:
        logger.warning("branch %s: CloudWatch metrics not written to %s: %s", spec.branch_id, uri, exc)
        return 0
    return len(rows)
