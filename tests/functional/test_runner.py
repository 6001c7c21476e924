"""A whole branch against the emulator over loopback: records on disk, outcome, progress and failures."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.dataset as ds
import pytest

from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.plan import plan_suite
from fmbench.records import RECORD_SCHEMA
from fmbench.runner import (
    BranchSetupError,
    ProgressEvent,
    make_client,
    run_branch,
)
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

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


async def wait_for_in_flight(url: str, count: int, timeout_s: float = 20.0) -> None:
    """Poll the emulator until ``count`` requests are in flight (a busy machine only makes this slower)."""
    deadline_s = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url + "/health") as response:
                in_flight = (await response.json())["in_flight"]
            if in_flight >= count:
                return
            if time.monotonic() > deadline_s:
                raise AssertionError(f"{in_flight} of {count} requests in flight after {timeout_s:g} s")
            await asyncio.sleep(0.02)


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
    assert Counter((r["concurrency"], r["phase"]) for r in rows) == {
        (1, "warmup"): WARMUP,
        (1, "measured"): REQUESTS,
        (4, "warmup"): WARMUP,
        (4, "measured"): REQUESTS,
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
    assert finished[1].message is not None and finished[1].message.startswith("max in flight 4")


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
        await wait_for_in_flight(url, 3)  # every worker's first request has reached the emulator
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rows = read_records(tmp_path)
    assert [(r["status"], r["error_class"], r["error_message"]) for r in rows] == [
        ("error", "client_error", "cancelled")
    ] * 3


def test_an_emulator_branch_without_its_url_is_refused_clearly(tmp_path: Path) -> None:
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


async def test_a_rate_sweep_writes_rate_mode_records(tmp_path: Path) -> None:
    # Constant arrivals at 32 and 64 per second, 1/32 s and 1/64 s apart (exact in binary): 2 warm-up
    # arrivals, then 12 measured, then 2 in cool-down, at both rates.
    spec = branch(
        tmp_path,
        concurrency=[],
        rates_per_s=[32, 64],
        arrival="constant",
        max_in_flight=8,
        requests_per_level=12,
        warmup_requests=2,
        cooldown_requests=2,
    )
    events: list[ProgressEvent] = []
    async with emulator_for(spec) as url:
        outcome = await run_branch(spec, endpoint_url=url, on_progress=events.append)
    assert (outcome.status, outcome.reason) == ("succeeded", None)
    rows = read_records(tmp_path)
    assert len(rows) == outcome.requests_attempted == outcome.records_written == 2 * 16
    assert Counter((r["request_rate_per_s"], r["phase"]) for r in rows) == {
        (32.0, "warmup"): 2,
        (32.0, "measured"): 12,
        (32.0, "cooldown"): 2,
        (64.0, "warmup"): 2,
        (64.0, "measured"): 12,
        (64.0, "cooldown"): 2,
    }
    for row in rows:
        assert (row["load_mode"], row["concurrency"], row["arrival"], row["max_in_flight"]) == (
            "rate",
            None,
            "constant",
            8,
        )
        assert row["status"] == "ok", row
        assert row["schedule_lag_s"] == pytest.approx(
            row["send_epoch_s"] - row["scheduled_epoch_s"], abs=1e-6
        )
        assert 0 <= row["schedule_lag_s"] < 1.0
        assert (row["prompt_tokens_local"], row["completion_tokens_local"]) == (
            row["prompt_tokens"],
            row["completion_tokens"],
        )  # the emulator counts with the same tokenizer
        assert row["runner_cpu_count"] >= 1 and row["runner_cpu_fraction"] >= 0
        assert row["request_id"].startswith(f"{spec.branch_id}-r{row['request_rate_per_s']:g}-50-500-")
    for rate in (32.0, 64.0):
        point = [r for r in rows if r["request_rate_per_s"] == rate]
        scheduled = sorted(r["scheduled_epoch_s"] for r in point)
        gaps = [later - earlier for earlier, later in itertools.pairwise(scheduled)]
        assert gaps == pytest.approx([1 / rate] * 15, abs=1e-6)  # the schedule, not the send times
        assert len({(r["client_bound"], r["runner_cpu_fraction"]) for r in point}) == 1
    finished = [e for e in events if e.kind == "load_point_finished"]
    assert [(e.concurrency, e.request_rate_per_s, e.completed) for e in finished] == [
        (None, 32.0, 16),
        (None, 64.0, 16),
    ]
    assert all(e.client_bound is not None for e in finished)


async def test_a_long_rate_point_is_flushed_in_parts(tmp_path: Path) -> None:
    spec = branch(tmp_path, concurrency=[], rates_per_s=[64], requests_per_level=None, duration_s=0.5)
    async with emulator_for(spec) as url:
        outcome = await run_branch(spec, endpoint_url=url, flush_interval_s=0.1)
    assert outcome.status == "succeeded"
    folder = tmp_path / "records" / "run_id=run-1" / f"branch_id={spec.branch_id}"
    assert len(list(folder.glob("part-*.parquet"))) >= 3  # one load point, written as it ran
    rows = read_records(tmp_path)
    assert len(rows) == outcome.requests_attempted == outcome.records_written
    assert len({r["request_id"] for r in rows}) == len(rows)
    assert Counter(r["phase"] for r in rows)["measured"] >= 10


async def test_faults_in_an_open_loop_are_records_and_the_point_completes(tmp_path: Path) -> None:
    faults = {"error_500_rate": 0.1, "error_429_rate": 0.1, "hang_rate": 0.1, "cut_stream_rate": 0.1}
    spec = branch(
        tmp_path,
        {**faults, "seed": 3},
        concurrency=[],
        rates_per_s=[64],
        requests_per_level=40,
        request_timeout_s=0.4,
    )
    async with emulator_for(spec) as url:
        outcome = await run_branch(spec, endpoint_url=url)
    assert (outcome.status, outcome.load_points_completed) == ("succeeded", 1)
    rows = read_records(tmp_path)
    assert len(rows) == outcome.requests_attempted == outcome.records_written == 40 + WARMUP
    errors = Counter(r["error_class"] for r in rows if r["status"] == "error")
    assert set(errors) <= {"http_5xx", "http_429", "timeout", "stream_cut"} and len(errors) >= 3
    for row in rows:
        assert row["latency_s"] < 0.4 + 0.2  # no request outlived its timeout
        if row["error_class"] == "timeout":
            assert row["latency_s"] == pytest.approx(0.4, abs=0.1)
