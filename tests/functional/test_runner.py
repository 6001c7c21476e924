"""A whole branch against the emulator over loopback: records on disk, outcome, progress and failures."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from fmbench.config import validate_suite_data
from fmbench.emulator.server import EmulatorSettings, running_emulator
from fmbench.plan import BranchSpec, plan_suite
from fmbench.records import RECORD_SCHEMA
from fmbench.runner import (
    BranchSetupError,
    ProgressEvent,
    UnsupportedPlatformError,
    make_client,
    run_branch,
)

FIXED_TIMING = {"ttft_ms": 20, "itl_ms": 2, "output_tokens": 8}
REQUESTS = 12
WARMUP = 2


def branch(tmp_path: Path, emulator: dict[str, Any] | None = None, **load: Any) -> BranchSpec:
    data = {
        "name": "runner-test",
        "targets": [
            {"name": "emu", "platform": "emulator", "emulator": {**FIXED_TIMING, **(emulator or {})}}
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": 8},
            "max_prompts_per_bin": 5,
        },
        "load": {"concurrency": [1, 4], "requests_per_level": REQUESTS, "warmup_requests": WARMUP, **load},
    }
    plan = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-1")
    (spec,) = plan.branches
    return spec


def emulator_for(spec: BranchSpec) -> Any:
    options = spec.target.emulator.model_dump()  # type: ignore[union-attr]
    return running_emulator(EmulatorSettings(**options))


def read_records(tmp_path: Path) -> Any:
    dataset = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive")
    return dataset.to_table().to_pylist()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_branch_writes_one_row_per_request_per_load_point(tmp_path: Path) -> None:
    spec = branch(tmp_path)
    events: list[ProgressEvent] = []
    async with emulator_for(spec) as url:
        outcome = await run_branch(spec, endpoint_url=url, on_progress=events.append)

    expected_rows = (REQUESTS + WARMUP) * 2
    assert (outcome.status, outcome.reason) == ("succeeded", None)
    assert outcome.requests_attempted == outcome.records_written == expected_rows
    assert (outcome.load_points_planned, outcome.load_points_completed) == (2, 2)
    assert outcome.started_epoch_s is not None and outcome.ended_epoch_s is not None
    assert outcome.started_epoch_s < outcome.ended_epoch_s

    folder = tmp_path / "records" / "run_id=run-1" / f"branch_id={spec.branch_id}"
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    rows = read_records(tmp_path)
    assert len(rows) == expected_rows
    assert {(r["run_id"], r["branch_id"]) for r in rows} == {("run-1", spec.branch_id)}
    assert Counter((r["concurrency"], r["is_warmup"]) for r in rows) == {
        (1, True): WARMUP,
        (1, False): REQUESTS,
        (4, True): WARMUP,
        (4, False): REQUESTS,
    }
    assert len({r["request_id"] for r in rows}) == expected_rows
    for row in rows:
        assert row["status"] == "ok", row
        assert (row["target_name"], row["platform"], row["payload_bin"], row["load_mode"]) == (
            "emu",
            "emulator",
            "50-500",
            "concurrency",
        )
        assert (row["api"], row["http_status"], row["error_class"]) == ("chat", 200, None)
        assert (row["completion_tokens"], row["token_source"]) == (8, "server")
        assert 50 <= row["prompt_tokens"] < 500
        assert len(row["itl_s"]) == 7
        assert row["ttft_s"] == pytest.approx(0.020, abs=0.015)
        assert row["latency_s"] == pytest.approx(row["end_epoch_s"] - row["send_epoch_s"], abs=1e-6)
        assert (
            row["scheduled_epoch_s"] <= row["send_epoch_s"] < row["first_token_epoch_s"] <= row["end_epoch_s"]
        )
        assert len(row["response_text"].split()) == 8
        assert row["prompt_id"] is not None
    assert set(RECORD_SCHEMA.names) <= set(rows[0])

    kinds = Counter(e.kind for e in events)
    assert kinds == {
        "branch_started": 1,
        "load_point_started": 2,
        "request_done": expected_rows,
        "load_point_finished": 2,
        "branch_finished": 1,
    }
    finished = [e for e in events if e.kind == "load_point_finished"]
    assert [(e.concurrency, e.load_point_index, e.completed, e.total, e.errors) for e in finished] == [
        (1, 0, 14, 14, 0),
        (4, 1, 14, 14, 0),
    ]
    assert finished[1].message == "max in flight 4"


async def test_a_load_point_that_only_fails_stops_the_branch_and_keeps_its_records(tmp_path: Path) -> None:
    spec = branch(tmp_path, {"error_500_rate": 1.0})
    async with emulator_for(spec) as url:
        outcome = await run_branch(spec, endpoint_url=url)
    assert outcome.status == "failed"
    assert outcome.reason == (
        f"all {REQUESTS} requests at concurrency 1, bin 50-500 failed: "
        "http_5xx (HTTP 500: emulated internal server error)"
    )
    assert outcome.requests_attempted == outcome.records_written == REQUESTS + WARMUP
    assert (outcome.load_points_planned, outcome.load_points_completed) == (2, 0)
    rows = read_records(tmp_path)
    assert len(rows) == REQUESTS + WARMUP
    assert {(r["status"], r["error_class"], r["http_status"]) for r in rows} == {("error", "http_5xx", 500)}


async def test_an_unreachable_endpoint_fails_before_any_record(tmp_path: Path) -> None:
    spec = branch(tmp_path)
    outcome = await run_branch(spec, endpoint_url=f"http://127.0.0.1:{closed_port()}")
    assert outcome.status == "failed"
    assert outcome.reason is not None and outcome.reason.startswith("endpoint unreachable: cannot connect")
    assert (outcome.requests_attempted, outcome.records_written, outcome.load_points_completed) == (0, 0, 0)
    assert not (tmp_path / "records").exists()


async def test_faults_are_recorded_and_the_branch_still_succeeds(tmp_path: Path) -> None:
    faults = {"error_500_rate": 0.05, "error_429_rate": 0.05, "hang_rate": 0.05, "cut_stream_rate": 0.05}
    spec = branch(tmp_path, {**faults, "seed": 7}, requests_per_level=30, request_timeout_s=0.4)
    async with emulator_for(spec) as url:
        outcome = await run_branch(spec, endpoint_url=url)
    assert (outcome.status, outcome.reason) == ("succeeded", None)
    rows = read_records(tmp_path)
    assert len(rows) == outcome.requests_attempted == outcome.records_written == (30 + WARMUP) * 2
    errors = Counter(r["error_class"] for r in rows if r["status"] == "error")
    assert set(errors) <= {"http_5xx", "http_429", "timeout", "stream_cut"}
    assert 3 <= sum(errors.values()) <= 30  # about 20 % of 64
    assert len(errors) >= 3
    for row in rows:
        if row["error_class"] == "timeout":
            assert row["latency_s"] == pytest.approx(0.4, abs=0.1)
        if row["status"] == "ok":
            assert row["completion_tokens"] == 8


async def test_a_cancelled_branch_flushes_the_requests_it_had_started(tmp_path: Path) -> None:
    spec = branch(tmp_path, {"hang_rate": 1.0}, concurrency=[3], request_timeout_s=60)
    async with emulator_for(spec) as url:
        task = asyncio.create_task(run_branch(spec, endpoint_url=url))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rows = read_records(tmp_path)
    assert [(r["status"], r["error_class"], r["error_message"]) for r in rows] == [
        ("error", "client_error", "cancelled")
    ] * 3


def test_platforms_without_a_client_are_refused_clearly(tmp_path: Path) -> None:
    data = {
        "name": "bedrock-test",
        "targets": [{"name": "br", "platform": "bedrock", "model_id": "anthropic.claude"}],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 1},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=str(tmp_path)).branches
    with pytest.raises(UnsupportedPlatformError, match="bedrock"):
        make_client(spec)
    with pytest.raises(BranchSetupError, match="endpoint_url"):
        make_client(branch(tmp_path))


async def test_a_missing_api_key_variable_fails_the_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FMBENCH_TEST_KEY", raising=False)
    data = {
        "name": "openai-test",
        "targets": [
            {
                "name": "ext",
                "platform": "openai",
                "endpoint_url": "http://127.0.0.1:9/v1",
                "api_key_env": "FMBENCH_TEST_KEY",
            }
        ],
        "workload": {"bins": [{"min_tokens": 50, "max_tokens": 500}]},
        "load": {"concurrency": [1], "requests_per_level": 1},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=str(tmp_path)).branches
    outcome = await run_branch(spec)
    assert (outcome.status, outcome.reason) == (
        "failed",
        "environment variable FMBENCH_TEST_KEY (api_key_env) is not set",
    )
