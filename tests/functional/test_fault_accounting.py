"""Requests attempted = records written, when every kind of fault happens at once (emulator over loopback)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds

from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints.base import HTTP_5XX, HTTP_429, MALFORMED_RESPONSE, STREAM_CUT, TIMEOUT
from fmbench.plan import plan_suite
from fmbench.runner import ProgressEvent, run_branch
from fmbench.suite import validate_suite_data

FAULTS = {
    "error_500_rate": 0.1,
    "error_429_rate": 0.1,
    "hang_rate": 0.1,
    "cut_stream_rate": 0.1,
    "malformed_event_rate": 0.1,
}
REQUEST_TIMEOUT_S = 0.5
# The engine bounds every request at its timeout + 1 s, whatever the client does.
BOUND_MARGIN_S = 1.0


async def test_every_attempt_under_faults_is_one_record_with_its_error_class(tmp_path: Path) -> None:
    data = {
        "name": "faults",
        "targets": [
            {
                "name": "emu",
                "platform": "emulator",
                "emulator": {"ttft_ms": 5, "itl_ms": 1, "output_tokens": 6, "seed": 11, **FAULTS},
            }
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": 6},
            "max_prompts_per_bin": 5,
        },
        "load": {
            "concurrency": [4],
            "rates_per_s": [40],
            "requests_per_level": 40,
            "warmup_requests": 4,
            "request_timeout_s": REQUEST_TIMEOUT_S,
        },
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="faults").branches
    attempts = Counter[int]()

    def on_progress(event: ProgressEvent) -> None:
        if event.kind == "request_done" and event.load_point_index is not None:
            attempts[event.load_point_index] += 1

    options = spec.target.emulator.model_dump()  # type: ignore[union-attr]
    async with running_emulator(EmulatorSettings(**options)) as url:
        outcome = await run_branch(spec, endpoint_url=url, on_progress=on_progress)

    rows = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table().to_pylist()
    assert sum(attempts.values()) == len(rows) == outcome.requests_attempted == outcome.records_written == 88
    assert attempts == {0: 44, 1: 44}
    assert (outcome.status, outcome.load_points_completed) == ("succeeded", 2)
    errors = [row for row in rows if row["status"] == "error"]
    classes = Counter(row["error_class"] for row in errors)
    assert set(classes) == {HTTP_5XX, HTTP_429, TIMEOUT, STREAM_CUT, MALFORMED_RESPONSE}
    assert 20 <= len(errors) <= 70  # about half of 88
    for row in errors:
        assert row["error_message"], row
        if row["error_class"] in (HTTP_5XX, HTTP_429):
            assert row["http_status"] == (500 if row["error_class"] == HTTP_5XX else 429)
    for row in rows:
        assert row["latency_s"] <= REQUEST_TIMEOUT_S + BOUND_MARGIN_S, row
        assert row["end_epoch_s"] - row["send_epoch_s"] <= REQUEST_TIMEOUT_S + BOUND_MARGIN_S
        assert (row["status"] == "ok") == (row["error_class"] is None)
