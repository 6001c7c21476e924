"""Judgment tables written directly with pyarrow and JUDGMENT_SCHEMA, into the run's evaluations layout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fmbench import layout
from fmbench.judgments import JUDGMENT_SCHEMA


def judgment(
    target_name: str,
    prompt_id: str,
    judge: str,
    verdict: str,
    *,
    payload_bin: str = "50-500",
    **overrides: Any,
) -> dict[str, Any]:
    """One judgment row with every field of the schema; ``overrides`` set any of them."""
    row: dict[str, Any] = {
        "suite_name": "judged",
        "target_name": target_name,
        "prompt_id": prompt_id,
        "payload_bin": payload_bin,
        "request_id": f"{target_name}-{prompt_id}",
        "judge": judge,
        "judge_model": f"model-of-{judge}",
        "judge_family": "generic",
        "verdict": verdict,
        "reason": None,
        "error_class": "timeout" if verdict == "error" else None,
        "attempts": 2 if verdict == "unparsed" else 1,
        "prompt_tokens": 300,
        "completion_tokens": 20,
        "latency_s": 0.5,
        "cost_usd": 0.001,
        "judged_epoch_s": 1_700_000_000.0,
        "raw_text": verdict,
        "token_f1": None,
        "rouge_l": None,
        "embedding_similarity": None,
        "answer_source": None,
    }
    row.update(overrides)
    return row


def write_judgments(
    root: str | Path,
    run_id: str,
    rows_by_branch: Mapping[str, Iterable[Mapping[str, Any]]],
    part_rows: int = 50,
) -> None:
    """Each branch's rows as Parquet parts of ``part_rows`` rows under evaluations/run_id=R/branch_id=B/."""
    for branch_id, rows in rows_by_branch.items():
        rows = list(rows)
        folder = Path(layout.evaluation_part_prefix(str(Path(root).resolve()), run_id, branch_id))
        folder.mkdir(parents=True, exist_ok=True)
        for number, start in enumerate(range(0, len(rows), part_rows)):
            table = pa.Table.from_pylist(rows[start : start + part_rows], schema=JUDGMENT_SCHEMA)
            pq.write_table(table, folder / layout.part_name(number))
