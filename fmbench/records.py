"""The request record: one row per request attempted, its Arrow schema and the Parquet writer.

``run_id`` and ``branch_id`` are not columns of the files: they are the Hive partitions of the storage
layout (``records/run_id=.../branch_id=.../part-NNNNN.parquet``), which Athena and DuckDB both read back as
columns. Keeping them out of the files avoids a column that would clash with the partition keys.
Times are epoch seconds (float64) so that the same arithmetic works in Trino and DuckDB.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import posixpath
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from fmbench import layout, storage

T = TypeVar("T")
# Records built or converted per slice when pacing: about 1.5 ms of work each on the development VM.
PACED_SLICE = 32

_RECORD_FIELDS: list[pa.Field[Any]] = [
    pa.field("suite_name", pa.string(), nullable=False),
    pa.field("target_name", pa.string(), nullable=False),
    pa.field("platform", pa.string(), nullable=False),
    pa.field("model", pa.string()),
    pa.field("container", pa.string()),
    pa.field("instance_type", pa.string()),
    pa.field("instance_count", pa.int32()),
    pa.field("instance_price_per_hour_usd", pa.float64()),
    pa.field("api", pa.string()),
    pa.field("load_mode", pa.string(), nullable=False),
    pa.field("concurrency", pa.int32()),
    pa.field("request_rate_per_s", pa.float64()),
    pa.field("arrival", pa.string()),
    pa.field("max_in_flight", pa.int32()),
    pa.field("payload_bin", pa.string(), nullable=False),
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("prompt_id", pa.string()),
    pa.field("phase", pa.string(), nullable=False),
    pa.field("scheduled_epoch_s", pa.float64(), nullable=False),
    pa.field("send_epoch_s", pa.float64(), nullable=False),
    pa.field("first_token_epoch_s", pa.float64()),
    pa.field("end_epoch_s", pa.float64(), nullable=False),
    pa.field("schedule_lag_s", pa.float64(), nullable=False),
    pa.field("ttft_s", pa.float64()),
    pa.field("latency_s", pa.float64(), nullable=False),
    pa.field("itl_s", pa.list_(pa.float64())),
    pa.field("prompt_tokens", pa.int32()),
    pa.field("completion_tokens", pa.int32()),
    pa.field("token_source", pa.string()),
    pa.field("prompt_tokens_local", pa.int32()),
    pa.field("completion_tokens_local", pa.int32()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_class", pa.string()),
    pa.field("http_status", pa.int32()),
    pa.field("error_message", pa.string()),
    pa.field("response_text", pa.string()),
    pa.field("runner_cpu_fraction", pa.float64()),
    pa.field("runner_cpu_count", pa.int32()),
    pa.field("client_bound", pa.bool_(), nullable=False),
    pa.field("max_tokens_requested", pa.int32()),
    pa.field("min_tokens_requested", pa.int32()),
    pa.field("first_answer_token_epoch_s", pa.float64()),
    pa.field("time_to_first_answer_s", pa.float64()),
    pa.field("reasoning_tokens", pa.int32()),
    pa.field("reasoning_tokens_local", pa.int32()),
    pa.field("search_step", pa.int32()),
]
RECORD_SCHEMA = pa.schema(_RECORD_FIELDS)
PARTITION_COLUMNS = layout.PARTITION_KEYS

Status = Literal["ok", "error"]
# Only 'measured' rows are in a load point's window; warm-up and cool-down rows are kept and flagged, and
# 'quality' rows are a branch's quality pass (evaluation.quality_pass): answers to judge, in no figure.
RecordPhase = Literal["warmup", "measured", "cooldown", "quality"]


@dataclass(slots=True)
class RequestRecord:
    """Field names and meaning match ``RECORD_SCHEMA`` one to one (checked by a unit test)."""

    suite_name: str
    target_name: str
    platform: str
    model: str | None
    container: str | None
    instance_type: str | None
    instance_count: int | None
    instance_price_per_hour_usd: float | None
    api: str | None
    load_mode: str
    concurrency: int | None
    request_rate_per_s: float | None
    payload_bin: str
    request_id: str
    prompt_id: str | None
    phase: RecordPhase
    scheduled_epoch_s: float
    send_epoch_s: float
    first_token_epoch_s: float | None
    end_epoch_s: float
    ttft_s: float | None
    latency_s: float
    schedule_lag_s: float = 0.0
    arrival: str | None = None
    max_in_flight: int | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_source: str | None = None
    prompt_tokens_local: int | None = None
    completion_tokens_local: int | None = None
    status: Status = "ok"
    error_class: str | None = None
    http_status: int | None = None
    error_message: str | None = None
    response_text: str | None = None
    runner_cpu_fraction: float | None = None
    runner_cpu_count: int | None = None
    client_bound: bool = False
    max_tokens_requested: int | None = None
    min_tokens_requested: int | None = None
    first_answer_token_epoch_s: float | None = None
    time_to_first_answer_s: float | None = None
    reasoning_tokens: int | None = None
    reasoning_tokens_local: int | None = None
    search_step: int | None = None


def paced_slices(items: Sequence[T], pause_s: float, size: int = PACED_SLICE) -> Iterator[Sequence[T]]:
    """``items`` in slices; after each but the last, the thread sleeps ``pause_s`` (none if 0).

    Work done in a worker thread beside a running load point (building and converting records) holds
    the GIL; each time the event loop's thread gives the GIL up for a system call, it would wait up to
    the interpreter's switch interval (5 ms) to get it back, so the load's timing would suffer for the
    whole write. Short slices with a pause between leave the loop's thread the GIL most of the time.
    """
    if pause_s <= 0 or len(items) <= size:
        yield items
        return
    for start in range(0, len(items), size):
        if start:
            time.sleep(pause_s)
        yield items[start : start + size]


def records_to_table(records: Sequence[RequestRecord], *, pause_s: float = 0.0) -> pa.Table:
    names = RECORD_SCHEMA.names
    tables = []
    for piece in paced_slices(records, pause_s):
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for record in piece:
            for name in names:
                columns[name].append(getattr(record, name))
        tables.append(pa.table(columns, schema=RECORD_SCHEMA))
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


@functools.cache
def warm_up_conversion() -> None:
    """pyarrow imports pandas on its first conversion of Python values (2 s of CPU here): do it now.

    Called before any load is sent (``RecordWriter`` does), so that the import never lands in the middle of
    a load point, where it would stall the event loop's thread for as long.
    """
    records_to_table([])


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for a local folder or an ``s3://bucket/prefix`` URI, and the path within it."""
    return storage.resolve_filesystem(uri)


class RecordsNotWrittenError(storage.StorageAccessError):
    """A part could not be written (a full disk, a lost permission): names the part, what it held, and
    how many of the branch's records are not on storage; the parts written before stay whole."""

    def __init__(self, uri: str, cause: BaseException, records: int, not_written: int, written: int) -> None:
        super().__init__(uri, "write", cause)
        self.records = records
        self.records_not_written = not_written
        self.records_written = written
        self.args = (
            f"cannot write {uri}: {cause}; {records} record(s) of that part not written "
            f"({not_written} of the branch so far); the {written} record(s) written before are kept",
        )

    def __str__(self) -> str:
        return str(self.args[0])


class RecordWriter:
    """Buffers records of one branch and writes them as numbered Parquet parts.

    ``flush`` is called at least once per load point, and within a long load point every few seconds or
    thousand records, so a runner killed mid-sweep keeps nearly all it measured and memory stays bounded.
    Thread-safe, so that parts can be written from a worker thread while the event loop keeps sending.
    """

    def __init__(self, root: str, run_id: str, branch_id: str) -> None:
        self.prefix = layout.records_prefix(root, run_id, branch_id)
        self._filesystem, self._path = resolve_filesystem(self.prefix)
        self._buffer: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._next_part = 0
        self.rows_written = 0
        self.rows_not_written = 0
        self.files: list[str] = []
        self._local = not self.prefix.startswith(storage.S3_PREFIX)
        self._filesystem.create_dir(self._path, recursive=True)
        self._next_part = self._first_free_part()
        warm_up_conversion()

    def _first_free_part(self) -> int:
        selector = pafs.FileSelector(self._path, allow_not_found=True)
        existing = [info.base_name for info in self._filesystem.get_file_info(selector)]
        numbers = [number for name in existing if (number := layout.part_number(name)) is not None]
        return max(numbers, default=-1) + 1

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._buffer.append(record)

    def extend(self, records: list[RequestRecord]) -> None:
        with self._lock:
            self._buffer.extend(records)

    def flush(self, *, pause_s: float = 0.0) -> str | None:
        """Write the buffered records as the next part; ``pause_s``: see ``paced_slices``."""
        with self._lock:
            if not self._buffer:
                return None
            batch, self._buffer = self._buffer, []
            name = layout.part_name(self._next_part)
            self._next_part += 1
        table = records_to_table(batch, pause_s=pause_s)
        path = posixpath.join(self._path, name)
        try:
            self._write_part(table, path)
        except OSError as exc:
            with self._lock:
                self.rows_not_written += table.num_rows
                not_written, written = self.rows_not_written, self.rows_written
            uri = posixpath.join(self.prefix, name)
            raise RecordsNotWrittenError(uri, exc, table.num_rows, not_written, written) from exc
        with self._lock:
            self.rows_written += table.num_rows
            self.files.append(path)
        return path

    def _write_part(self, table: pa.Table, path: str) -> None:
        """A part appears whole or not at all: locally it is written under a temporary name (which no
        reader globs) and renamed; on S3 an upload only becomes visible once complete. A failed write
        leaves nothing behind."""
        target = f"{path}.tmp-{os.getpid()}" if self._local else path
        try:
            pq.write_table(table, target, filesystem=self._filesystem, compression="zstd")
            if target != path:
                self._filesystem.move(target, path)
        except BaseException:
            if self._local:
                with contextlib.suppress(OSError):
                    self._filesystem.delete_file(target)
            raise


def record_field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RequestRecord)]


def _athena_type(data_type: pa.DataType) -> str:
    if pa.types.is_string(data_type):
        return "string"
    if pa.types.is_int32(data_type):
        return "int"
    if pa.types.is_int64(data_type):
        return "bigint"
    if pa.types.is_float64(data_type):
        return "double"
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_list(data_type):
        return f"array<{_athena_type(data_type.value_type)}>"
    raise TypeError(f"no Athena type for {data_type}")


def athena_columns() -> list[tuple[str, str]]:
    """(name, Athena type) of every record column, in file order: the Glue table is derived from this."""
    return [(f.name, _athena_type(f.type)) for f in RECORD_SCHEMA]
