"""The endpoint's own figures per load point (``sql/server_metrics.sql``) and its utilization over the run.

The rows are few (a scrape a second, or a CloudWatch datapoint a minute), so they are read with pyarrow
from the run's ``server_metrics/`` folder (a local folder or ``s3://``, the same code in the cloud Render)
and queried in an in-memory DuckDB: no Athena table is needed. Definitions: docs/metrics.md,
"Server-side metrics".
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from pyarrow import fs as pafs

from fmbench import layout, storage
from fmbench.server_metrics import SERVER_METRIC_SCHEMA
from report.analysis import python_value
from report.query import load_sql, to_duckdb

# Column order of server_metrics.sql.
SERVER_METRIC_COLUMNS: Final[tuple[str, ...]] = (
    "branch_id",
    "load_mode",
    "concurrency",
    "request_rate_per_s",
    "payload_bin",
    "scrapes",
    "running_mean",
    "running_max",
    "waiting_mean",
    "waiting_max",
    "kv_cache_usage_mean",
    "kv_cache_usage_max",
    "prefix_cache_hit_rate",
    "server_prompt_tokens",
    "server_generation_tokens",
    "server_requests_succeeded",
    "server_ttft_mean_s",
    "cloudwatch_periods",
    "model_latency_mean_s",
    "model_latency_max_s",
    "overhead_latency_mean_s",
    "invocation_latency_mean_s",
    "invocations",
    "invocation_errors",
    "throttles",
    "input_tokens",
    "output_tokens",
    "cpu_utilization_mean",
    "memory_utilization_mean",
    "gpu_utilization_mean",
    "gpu_utilization_max",
    "gpu_memory_utilization_mean",
)
# What the utilization chart draws over time: (source, metric, statistic) -> its label.
SERIES: Final[Mapping[tuple[str, str, str | None], str]] = MappingProxyType(
    {
        ("prometheus", "vllm:num_requests_running", None): "running requests",
        ("prometheus", "vllm:num_requests_waiting", None): "waiting requests",
        ("prometheus", "vllm:kv_cache_usage_perc", None): "KV-cache usage",
        ("cloudwatch", "GPUUtilization", "Average"): "GPU utilization",
        ("cloudwatch", "CPUUtilization", "Average"): "CPU utilization",
    }
)


def read_server_metrics(storage_root: str, run_id: str) -> pa.Table | None:
    """Every server-metric row of the run with its ``run_id`` and ``branch_id``; None when there are none."""
    folder = layout.run_folder(storage_root, layout.SERVER_METRICS, run_id)
    filesystem, path = storage.resolve_filesystem(folder)
    selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
    try:
        infos = filesystem.get_file_info(selector)
    except (FileNotFoundError, storage.StorageNotFoundError):
        return None
    files = [info.path for info in infos if info.is_file and info.path.endswith(layout.PART_SUFFIX)]
    if not files:
        return None
    partitioning = ds.partitioning(pa.schema([(layout.BRANCH_KEY, pa.string())]), flavor="hive")
    dataset = ds.dataset(
        files,
        schema=SERVER_METRIC_SCHEMA.append(pa.field(layout.BRANCH_KEY, pa.string())),
        filesystem=filesystem,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=posixpath.normpath(path),
    )
    table = dataset.to_table()
    return table.append_column(layout.RUN_KEY, pa.array([run_id] * table.num_rows, pa.string()))


def server_metrics_summary(table: pa.Table | None, run_id: str) -> pd.DataFrame:
    """``server_metrics.sql`` over ``table`` (columns ``SERVER_METRIC_COLUMNS``; empty without rows)."""
    if table is None or table.num_rows == 0:
        return pd.DataFrame(columns=list(SERVER_METRIC_COLUMNS))
    with duckdb.connect(":memory:") as connection:
        connection.register("server_metrics", table)
        frame = connection.execute(to_duckdb(load_sql("server_metrics"), run_id=run_id)).df()
    return frame[list(SERVER_METRIC_COLUMNS)]


@dataclass(frozen=True, slots=True)
class ServerPoint:
    """One load point's server-side figures (``SERVER_METRIC_COLUMNS``, None where there are none)."""

    branch_id: str
    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str
    figures: Mapping[str, Any]

    def __getitem__(self, column: str) -> Any:
        return self.figures[column]


@dataclass(frozen=True, slots=True)
class SeriesSample:
    branch_id: str
    label: str  # a SERIES label
    epoch_s: float
    value: float


@dataclass(frozen=True, slots=True)
class ServerMetricsView:
    points: tuple[ServerPoint, ...]
    series: tuple[SeriesSample, ...]

    def point(
        self, branch_id: str, concurrency: int | None, request_rate_per_s: float | None, payload_bin: str
    ) -> ServerPoint | None:
        for p in self.points:
            if (p.branch_id, p.concurrency, p.request_rate_per_s, p.payload_bin) == (
                branch_id,
                concurrency,
                request_rate_per_s,
                payload_bin,
            ):
                return p
        return None


def _series(table: pa.Table) -> tuple[SeriesSample, ...]:
    """The chart's samples: each SERIES metric per branch and moment (label sets added up)."""
    frame = table.select(
        ["branch_id", "source", "metric", "statistic", "sampled_epoch_s", "value"]
    ).to_pandas()
    frame["statistic"] = frame["statistic"].astype(object).where(frame["statistic"].notna(), None)
    samples: list[SeriesSample] = []
    for (source, metric, statistic), label in SERIES.items():
        mask = (frame["source"] == source) & (frame["metric"] == metric)
        mask &= frame["statistic"].isna() if statistic is None else frame["statistic"] == statistic
        picked = frame[mask].groupby(["branch_id", "sampled_epoch_s"], as_index=False)["value"].sum()
        samples += [
            SeriesSample(str(row.branch_id), label, float(row.sampled_epoch_s), float(row.value))
            for row in picked.itertuples(index=False)
        ]
    return tuple(sorted(samples, key=lambda s: (s.branch_id, s.label, s.epoch_s)))


def server_metrics_view(storage_root: str, run_id: str) -> ServerMetricsView | None:
    """The run's server-side figures for the report, or None when no branch has any."""
    table = read_server_metrics(storage_root, run_id)
    summary = server_metrics_summary(table, run_id)
    if table is None or summary.empty:
        return None
    points = []
    for record in summary.to_dict(orient="records"):
        figures = {str(k): python_value(v) for k, v in record.items()}
        concurrency = figures["concurrency"]
        rate = figures["request_rate_per_s"]
        points.append(
            ServerPoint(
                branch_id=str(figures["branch_id"]),
                concurrency=None if concurrency is None else int(concurrency),
                request_rate_per_s=None if rate is None or concurrency is not None else float(rate),
                payload_bin=str(figures["payload_bin"]),
                figures=MappingProxyType(figures),
            )
        )
    return ServerMetricsView(points=tuple(points), series=_series(table))
