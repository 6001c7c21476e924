"""The judgment rows of one candidate as numbered Parquet parts, local folder or ``s3://``."""

from __future__ import annotations

import contextlib
import os
import posixpath
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from fmbench import layout, storage
from fmbench.judgments import JUDGMENT_SCHEMA, RAW_TEXT_LIMIT


@dataclass(slots=True)
class Judgment:
    """One row of ``JUDGMENT_SCHEMA`` (field for field; a unit test checks)."""

    suite_name: str
    target_name: str
    prompt_id: str
    payload_bin: str
    request_id: str | None
    judge: str
    judge_model: str | None
    judge_family: str | None
    verdict: str
    reason: str | None
    error_class: str | None
    attempts: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float | None
    cost_usd: float | None
    judged_epoch_s: float
    raw_text: str | None
    token_f1: float | None
    rouge_l: float | None
    embedding_similarity: float | None
    answer_source: str | None = None


def judgments_to_table(rows: list[Judgment]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in JUDGMENT_SCHEMA.names}
    for row in rows:
        values = asdict(row)
        if values["raw_text"] is not None:
            values["raw_text"] = values["raw_text"][:RAW_TEXT_LIMIT]
        for name in JUDGMENT_SCHEMA.names:
            columns[name].append(values[name])
    return pa.table(columns, schema=JUDGMENT_SCHEMA)


def clear_evaluations(root: str, run_id: str) -> None:
    """Delete a local run's judgments (``fmbench evaluate`` replaces them); nothing else of the run.

    On S3 nothing is deleted: Arrow re-creates an empty ``.../`` marker object for the folder of every
    object it deletes, and Athena reads such objects as files of the table. There each branch's writer
    writes its parts from number 0 over the earlier ones, and empties (0 rows) any earlier part beyond them.
    """
    prefix = layout.evaluations_prefix(root, run_id)
    if prefix.startswith(storage.S3_PREFIX):
        return
    filesystem, path = storage.resolve_filesystem(prefix)
    with contextlib.suppress(FileNotFoundError):
        filesystem.delete_dir_contents(path.rstrip("/"), missing_dir_ok=True)


class JudgmentWriter:
    """Writes one candidate's rows as parts from number 0; a part appears whole or not at all (as
    ``RecordWriter``). ``close`` empties the parts of an earlier judging beyond those written (S3)."""

    def __init__(self, root: str, run_id: str, branch_id: str) -> None:
        self.prefix = layout.evaluation_part_prefix(root, run_id, branch_id)
        self._filesystem, path = storage.resolve_filesystem(self.prefix)
        self._path = path.rstrip("/")
        self._local = not self.prefix.startswith(storage.S3_PREFIX)
        self._filesystem.create_dir(self._path, recursive=True)
        selector = pafs.FileSelector(self._path, allow_not_found=True)
        names = [info.base_name for info in self._filesystem.get_file_info(selector)]
        self._earlier = sorted(n for name in names if (n := layout.part_number(name)) is not None)
        self._next_part = 0
        self.rows_written = 0

    def write(self, rows: list[Judgment]) -> str | None:
        if not rows:
            return None
        path = self._write_table(judgments_to_table(rows))
        self.rows_written += len(rows)
        return path

    def close(self) -> None:
        """Empty every earlier part this judging did not write over."""
        for number in self._earlier:
            if number >= self._next_part:
                self._next_part = number
                self._write_table(judgments_to_table([]))

    def _write_table(self, table: pa.Table) -> str:
        path = posixpath.join(self._path, layout.part_name(self._next_part))
        self._next_part += 1
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
        return path
