"""The endpoint's own metrics beside the client's records: the row schema, its writer, and the scraper.

Two sources fill the same table (``server_metrics/run_id=R/branch_id=B/part-NNNNN.parquet``):

- ``prometheus``: an OpenAI-compatible server's ``/metrics`` (vLLM's names; the emulator speaks them),
  scraped by :class:`ServerMetricsScraper` just before each load point (the previous point's last scrape),
  every ``load.server_metrics.scrape_interval_s`` seconds while it runs, and once as it ends. Only the
  families in ``PROMETHEUS_FAMILIES`` are kept, and of a histogram only its ``_sum`` and ``_count``. A page
  of TGI or SGLang (no vLLM family on it) is translated: the samples of ``TRANSLATED_SAMPLES`` are stored
  under the vLLM names they stand for, with labels ``server_kind`` and ``exposed_as`` (the server's own
  name), so everything downstream reads one set of names.
- ``cloudwatch``: SageMaker's and Bedrock's CloudWatch metrics over each load point's window, fetched after
  the branch (``fmbench.cloud.cloudwatch``); one row per metric, statistic and minute.

A row names its load point as the records do (``load_mode``, ``concurrency`` or ``request_rate_per_s``,
``payload_bin``), so the report joins the two sides per load point. ``run_id`` and ``branch_id`` are the
layout's Hive partitions, not columns. Definitions and caveats: docs/metrics.md, "Server-side metrics".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from fmbench import layout, storage

logger = logging.getLogger(__name__)

Source = Literal["prometheus", "cloudwatch"]

_SERVER_METRIC_FIELDS: list[pa.Field[Any]] = [
    pa.field("source", pa.string(), nullable=False),  # prometheus | cloudwatch
    pa.field("load_mode", pa.string(), nullable=False),  # concurrency | rate, as in the records
    pa.field("concurrency", pa.int32()),
    pa.field("request_rate_per_s", pa.float64()),
    pa.field("payload_bin", pa.string(), nullable=False),
    # when the value was read (prometheus) or the start of its period (cloudwatch), epoch seconds
    pa.field("sampled_epoch_s", pa.float64(), nullable=False),
    # the sample's name: vllm:num_requests_running, vllm:prompt_tokens_total, ..._sum (TGI's and SGLang's
    # under the vLLM name they stand for); or ModelLatency
    pa.field("metric", pa.string(), nullable=False),
    pa.field("labels", pa.string(), nullable=False),  # JSON object, keys sorted
    pa.field("value", pa.float64(), nullable=False),
    pa.field("statistic", pa.string()),  # cloudwatch: Average, Sum, Maximum; prometheus: null
    pa.field("period_s", pa.int32()),  # cloudwatch: the period of the statistic; prometheus: null
]
SERVER_METRIC_SCHEMA: Final = pa.schema(_SERVER_METRIC_FIELDS)

# Families kept from a /metrics page (the parser's family names: a counter's without ``_total``). Older
# vLLM names are kept too: gpu_cache_usage_perc became kv_cache_usage_perc, gpu_prefix_cache_* lost "gpu_".
PROMETHEUS_FAMILIES: Final = frozenset(
    {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:gpu_prefix_cache_queries",
        "vllm:gpu_prefix_cache_hits",
        "vllm:request_success",
        "vllm:num_preemptions",
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
    }
)
_HISTOGRAM_SUFFIXES: Final = ("_sum", "_count")

ServerKind = Literal["vllm", "tgi", "sglang"]
SERVER_KIND_LABEL: Final = "server_kind"
EXPOSED_AS_LABEL: Final = "exposed_as"
_RUNNING, _WAITING = "vllm:num_requests_running", "vllm:num_requests_waiting"
_KV_USAGE = "vllm:kv_cache_usage_perc"
_PROMPT, _GENERATED = "vllm:prompt_tokens_total", "vllm:generation_tokens_total"
_SUCCEEDED = "vllm:request_success_total"
_TTFT, _E2E = "vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"
# Other servers' samples (by sample name, as the text parser gives them) -> the vLLM samples they stand for
# (docs/metrics.md, "Server-side metrics"). TGI counts without "_total" (its Rust exporter's style); a page
# that adds it is read too. TGI has no TTFT, KV-cache or prefix-cache figure; SGLang's prompt tokens are
# also its prefix-cache queries (its cached tokens count the hits among them).
TRANSLATED_SAMPLES: Final[dict[ServerKind, dict[str, tuple[str, ...]]]] = {
    "tgi": {
        "tgi_batch_current_size": (_RUNNING,),
        "tgi_queue_size": (_WAITING,),
        "tgi_request_input_length_sum": (_PROMPT,),
        "tgi_request_generated_tokens_sum": (_GENERATED,),
        "tgi_request_success": (_SUCCEEDED,),
        "tgi_request_success_total": (_SUCCEEDED,),
        "tgi_request_duration_sum": (f"{_E2E}_sum",),
        "tgi_request_duration_count": (f"{_E2E}_count",),
    },
    "sglang": {
        "sglang:num_running_reqs": (_RUNNING,),
        "sglang:num_queue_reqs": (_WAITING,),
        "sglang:token_usage": (_KV_USAGE,),
        "sglang:prompt_tokens_total": (_PROMPT, "vllm:prefix_cache_queries_total"),
        "sglang:generation_tokens_total": (_GENERATED,),
        "sglang:cached_tokens_total": ("vllm:prefix_cache_hits_total",),
        "sglang:num_requests_total": (_SUCCEEDED,),
        "sglang:time_to_first_token_seconds_sum": (f"{_TTFT}_sum",),
        "sglang:time_to_first_token_seconds_count": (f"{_TTFT}_count",),
        "sglang:e2e_request_latency_seconds_sum": (f"{_E2E}_sum",),
        "sglang:e2e_request_latency_seconds_count": (f"{_E2E}_count",),
    },
}
_KIND_PREFIXES: Final[dict[ServerKind, str]] = {"vllm": "vllm:", "sglang": "sglang:", "tgi": "tgi_"}
# A scrape waits at most this long for its answer; a slower one is skipped, not retried.
SCRAPE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class PointKey:
    """A load point as the records name it."""

    load_mode: str
    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str


@dataclass(frozen=True, slots=True)
class MetricRow:
    source: Source
    point: PointKey
    sampled_epoch_s: float
    metric: str
    labels: dict[str, str]
    value: float
    statistic: str | None = None
    period_s: int | None = None


def rows_to_table(rows: Sequence[MetricRow]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in SERVER_METRIC_SCHEMA.names}
    for row in rows:
        columns["source"].append(row.source)
        columns["load_mode"].append(row.point.load_mode)
        columns["concurrency"].append(row.point.concurrency)
        columns["request_rate_per_s"].append(row.point.request_rate_per_s)
        columns["payload_bin"].append(row.point.payload_bin)
        columns["sampled_epoch_s"].append(row.sampled_epoch_s)
        columns["metric"].append(row.metric)
        columns["labels"].append(json.dumps(row.labels, sort_keys=True))
        columns["value"].append(row.value)
        columns["statistic"].append(row.statistic)
        columns["period_s"].append(row.period_s)
    return pa.table(columns, schema=SERVER_METRIC_SCHEMA)


def write_table_to(uri: str, rows: Sequence[MetricRow]) -> None:
    """Write ``rows`` as one Parquet file at ``uri`` (a local path or ``s3://``), replacing any file there.

    The file appears whole or not at all: locally it is written under a temporary name and moved.
    """
    filesystem, path = storage.resolve_filesystem(uri)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    local = not uri.startswith(storage.S3_PREFIX)
    staging = f"{path}.tmp" if local else path
    pq.write_table(rows_to_table(rows), staging, filesystem=filesystem, compression="zstd")
    if staging != path:
        filesystem.move(staging, path)


def write_rows(root: str, run_id: str, branch_id: str, rows: Sequence[MetricRow]) -> str | None:
    """Write ``rows`` as the branch's next numbered part (none for no rows); returns its URI."""
    if not rows:
        return None
    prefix = layout.server_metrics_prefix(root, run_id, branch_id)
    filesystem, path = storage.resolve_filesystem(prefix)
    selector = pafs.FileSelector(path.rstrip("/"), allow_not_found=True)
    numbers = [layout.part_number(info.base_name) for info in filesystem.get_file_info(selector)]
    uri = prefix + layout.part_name(max((n for n in numbers if n is not None), default=-1) + 1)
    write_table_to(uri, rows)
    return uri


# ------------------------------------------------------------------------------------------ prometheus


def server_kind(family_names: Sequence[str]) -> ServerKind | None:
    """Which server a page's family names come from: vLLM's first, then SGLang's, then TGI's prefix."""
    for kind, prefix in _KIND_PREFIXES.items():
        if any(name.startswith(prefix) for name in family_names):
            return kind
    return None


def _translated(
    kind: ServerKind, families: list[Any], sampled_epoch_s: float, point: PointKey
) -> list[MetricRow]:
    table = TRANSLATED_SAMPLES[kind]
    rows: list[MetricRow] = []
    for family in families:
        for sample in family.samples:
            for metric in table.get(sample.name, ()):
                labels = {**sample.labels, SERVER_KIND_LABEL: kind, EXPOSED_AS_LABEL: sample.name}
                rows.append(MetricRow("prometheus", point, sampled_epoch_s, metric, labels, sample.value))
    return rows


def parse_exposition(text: str, sampled_epoch_s: float, point: PointKey) -> list[MetricRow]:
    """The rows of one scrape: samples of the known families (histograms: ``_sum`` and ``_count``); a
    TGI or SGLang page's known samples under the vLLM names they stand for."""
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(text))
    kind = server_kind([family.name for family in families])
    if kind is not None and kind != "vllm":
        return _translated(kind, families, sampled_epoch_s, point)
    rows: list[MetricRow] = []
    for family in families:
        name = family.name
        if name not in PROMETHEUS_FAMILIES and name.removesuffix("_total") not in PROMETHEUS_FAMILIES:
            continue
        for sample in family.samples:
            if family.type == "histogram" and not sample.name.endswith(_HISTOGRAM_SUFFIXES):
                continue
            if sample.name.endswith("_created"):
                continue
            rows.append(
                MetricRow(
                    "prometheus", point, sampled_epoch_s, sample.name, dict(sample.labels), sample.value
                )
            )
    return rows


def default_metrics_url(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000/metrics``: vLLM serves its metrics beside the API."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1") + "/metrics"


@dataclass
class _Scrapes:
    point: PointKey
    pages: list[tuple[float, str]] = field(default_factory=list)


class ServerMetricsScraper:
    """Scrapes one server's ``/metrics`` during each load point and writes the rows after it.

    The GETs run on the load's event loop (one connection of their own, outside the load's pool), and keep
    only the page's text: parsing and writing happen after the point, in a worker thread, paced so that a
    parallel branch's load point on the same loop is not held up. A server that answers anything but 200
    to the first scrape, or cannot be reached, is noted once (``note``) and not scraped again.
    """

    def __init__(self, url: str, interval_s: float, *, root: str, run_id: str, branch_id: str) -> None:
        self.url = url
        self.interval_s = interval_s
        self._root = root
        self._run_id = run_id
        self._branch_id = branch_id
        self._session: aiohttp.ClientSession | None = None
        self._answered = False
        self._last_page: tuple[float, str] | None = None
        self.note: str | None = None
        self.rows_written = 0

    @property
    def active(self) -> bool:
        return self.note is None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get(self) -> tuple[float, str] | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S),
            )
        try:
            async with self._session.get(self.url) as response:
                text = await response.text()
                if response.status != 200:
                    if not self._answered:
                        self._give_up(f"GET {self.url} answered HTTP {response.status}")
                    return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not self._answered:
                self._give_up(f"GET {self.url} failed: {type(exc).__name__}: {exc}")
            return None
        self._answered = True
        return time.time(), text

    def _give_up(self, why: str) -> None:
        self.note = f"no server metrics for this branch: {why}"
        logger.warning("branch %s: %s", self._branch_id, self.note)

    async def _scrape_into(self, scrapes: _Scrapes) -> None:
        page = await self._get()
        if page is not None:
            scrapes.pages.append(page)

    async def _every_interval(self, scrapes: _Scrapes) -> None:
        """Scrape every interval (a slow answer delays the next scrape, never the load)."""
        loop = asyncio.get_running_loop()
        next_s = loop.time() + self.interval_s
        while self.active:
            await asyncio.sleep(max(0.0, next_s - loop.time()))
            next_s += self.interval_s
            await self._scrape_into(scrapes)

    @contextlib.asynccontextmanager
    async def watch(self, point: PointKey) -> AsyncIterator[None]:
        """Scrape while the block runs (the load point), then write what was scraped."""
        if not self.active:
            yield
            return
        scrapes = _Scrapes(point)
        # The point's first sample is the state just before it: the previous point's last scrape (nothing
        # runs between two points), or a scrape before the branch's first point. So the counters' change
        # over the point is the point's own work, and no point's start waits for a scrape but the first.
        if self._last_page is None:
            await self._scrape_into(scrapes)
        else:
            scrapes.pages.append(self._last_page)
        self._last_page = None
        task = asyncio.get_running_loop().create_task(self._every_interval(scrapes))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.active:
            self._last_page = await self._get()
            if self._last_page is not None:
                scrapes.pages.append(self._last_page)
        if scrapes.pages:
            self.rows_written += await asyncio.to_thread(self._write, scrapes)

    def _write(self, scrapes: _Scrapes) -> int:
        rows: list[MetricRow] = []
        for sampled_s, text in scrapes.pages:
            rows += parse_exposition(text, sampled_s, scrapes.point)
            time.sleep(0.001)  # let the event loop's thread in between pages
        try:
            write_rows(self._root, self._run_id, self._branch_id, rows)
        except OSError as exc:
            logger.warning("branch %s: server metrics not written: %s", self._branch_id, exc)
            return 0
        return len(rows)
