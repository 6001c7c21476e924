"""Open-loop schedules, phases, the client self-check and part-wise writing, against in-memory fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections import Counter
from time import perf_counter
from typing import Any

import numpy as np
import pytest
from fakes import FakeClient, wait_until

from fmbench.config import ClientCheck, InferenceParameters
from fmbench.endpoints.base import CLIENT_ERROR, HTTP_5XX, TIMEOUT, InvocationResult
from fmbench.loadgen import (
    Attempt,
    ClosedLoop,
    CpuMeter,
    EpochClock,
    LoadPoint,
    LoadPointRun,
    LoadPointTally,
    OpenLoop,
    PointPart,
    RecordContext,
    build_records,
    judge,
    schedule_s,
    summarize,
)
from fmbench.loadgen import engine as engine_module
from fmbench.payloads import Prompt
from fmbench.records import RECORD_SCHEMA, RequestRecord
from fmbench.tokenizer import get_tokenizer

PARAMS = InferenceParameters(max_new_tokens=4, stream=True)
PROMPTS = [Prompt("p0", "What is the capital of France?", 7, None), Prompt("p1", "Name two rivers.", 4, None)]
CONTEXT = RecordContext(
    suite_name="suite",
    branch_id="emu-12345678",
    target_name="emu",
    platform="emulator",
    model="m",
    container=None,
    instance_type=None,
    instance_count=1,
    instance_price_per_hour_usd=None,
    api="chat",
)
RELAXED = ClientCheck(max_schedule_lag_p99_s=10.0, max_runner_cpu_fraction=100.0)


def rate_point(rate_per_s: float, requests: int | None = None, **kwargs: Any) -> LoadPoint:
    return LoadPoint(
        concurrency=None,
        request_rate_per_s=rate_per_s,
        payload_bin="small",
        prompts=PROMPTS,
        params=PARAMS,
        timeout_s=kwargs.pop("timeout_s", 5.0),
        requests=requests,
        **kwargs,
    )


def closed_point(concurrency: int, requests: int | None = None, **kwargs: Any) -> LoadPoint:
    return LoadPoint(
        concurrency=concurrency,
        payload_bin="small",
        prompts=PROMPTS,
        params=PARAMS,
        timeout_s=kwargs.pop("timeout_s", 5.0),
        requests=requests,
        **kwargs,
    )


def offsets_of(loop: OpenLoop) -> list[float]:
    assert loop.start_perf_s is not None
    return [a.scheduled_perf_s - loop.start_perf_s for a in sorted(loop.attempts, key=lambda a: a.seq)]


# ------------------------------------------------------------------------------------------ schedules


async def test_constant_rate_is_achieved_without_drift() -> None:
    client = FakeClient(delay_s=0.001)
    loop = OpenLoop(client, rate_point(200.0, requests=300, arrival="constant"))
    await loop.run()
    sends_s = np.array(sorted(client.sends_perf_s))
    assert len(sends_s) == 300
    achieved_per_s = (len(sends_s) - 1) / (sends_s[-1] - sends_s[0])
    assert achieved_per_s == pytest.approx(200.0, rel=0.02)
    slope_s = np.polyfit(np.arange(len(sends_s)), sends_s, 1)[0]  # robust to one late send at either end
    assert 1 / slope_s == pytest.approx(200.0, rel=0.02)
    # Absolute deadlines: the schedule is exactly index / rate, and lateness does not accumulate.
    assert offsets_of(loop) == pytest.approx([index / 200.0 for index in range(300)], abs=1e-9)
    lags_s = [a.schedule_lag_s for a in sorted(loop.attempts, key=lambda a: a.seq)]
    assert min(lags_s) >= 0
    assert statistics.median(lags_s[-30:]) < statistics.median(lags_s[:30]) + 0.005


def test_poisson_schedule_is_seeded_and_has_the_right_mean_gap() -> None:
    first = schedule_s("poisson", 50.0, 4000, seed=7)
    assert first == schedule_s("poisson", 50.0, 4000, seed=7)  # reproducible to the bit
    assert first != schedule_s("poisson", 50.0, 4000, seed=8)
    assert first[0] == 0.0
    gaps_s = np.diff(first)
    assert gaps_s.mean() == pytest.approx(1 / 50.0, rel=0.05)
    assert gaps_s.std() == pytest.approx(1 / 50.0, rel=0.08)  # exponential: std = mean
    assert (gaps_s > 0).all()
    # Two rates share their random numbers: the slower schedule is the faster one stretched.
    assert schedule_s("poisson", 25.0, 100, seed=7) == pytest.approx([2 * t for t in first[:100]], rel=1e-9)
    assert schedule_s("constant", 4.0, 5) == [0.0, 0.25, 0.5, 0.75, 1.0]


async def test_the_engine_sends_on_the_seeded_poisson_schedule() -> None:
    loop = OpenLoop(FakeClient(delay_s=0.001), rate_point(400.0, requests=60, seed=3))
    await loop.run()
    assert offsets_of(loop) == pytest.approx(schedule_s("poisson", 400.0, 60, seed=3), abs=1e-9)


async def test_a_precomputed_schedule_is_followed() -> None:
    offsets_s = [0.0, 0.01, 0.011, 0.05]
    loop = OpenLoop(FakeClient(delay_s=0.001), rate_point(1.0, requests=4), offsets_s=offsets_s)
    await loop.run()
    assert offsets_of(loop) == pytest.approx(offsets_s, abs=1e-9)
    assert all(a.schedule_lag_s < 0.02 for a in loop.attempts)


async def test_max_in_flight_is_respected_and_the_wait_is_lag() -> None:
    # Arrivals every 5 ms, but two slots of 50 ms serve only 40 per second: arrivals queue in the client.
    client = FakeClient(delay_s=0.05)
    loop = OpenLoop(client, rate_point(200.0, requests=20, arrival="constant", max_in_flight=2))
    await loop.run()
    assert client.max_in_flight == loop.max_in_flight == 2
    attempts = sorted(loop.attempts, key=lambda a: a.seq)
    assert [a.seq for a in attempts] == list(range(20))  # none skipped
    # scheduled = arrival, not the moment a slot freed
    assert offsets_of(loop) == pytest.approx([index / 200.0 for index in range(20)], abs=1e-9)
    lags_s = [a.schedule_lag_s for a in attempts]
    # Request i waits for the slot freed at about 50 ms x (i // 2): lag >= 0.05 x (i // 2) - i / 200.
    for index in (10, 15, 19):
        expected_s = 0.05 * (index // 2) - index / 200
        assert expected_s - 0.01 <= lags_s[index] <= expected_s + 0.2  # late timers only add to it
    assert lags_s[19] > 0.3
    records = build_records(attempts, loop.point, CONTEXT, EpochClock.start(), get_tokenizer("simple"))
    for attempt, record in zip(attempts, records, strict=True):
        assert record.schedule_lag_s == attempt.schedule_lag_s
        assert record.send_epoch_s - record.scheduled_epoch_s == pytest.approx(
            record.schedule_lag_s, abs=1e-6
        )
        assert (record.concurrency, record.request_rate_per_s, record.max_in_flight) == (None, 200.0, 2)
        assert (record.load_mode, record.arrival) == ("rate", "constant")


async def test_late_arrivals_are_sent_at_once_and_never_skipped() -> None:
    # The first call blocks the event loop for 150 ms: the arrivals due meanwhile (every 10 ms) are late.
    client = FakeClient(delay_s=0.001, stall_calls={0: 0.15})
    loop = OpenLoop(client, rate_point(100.0, requests=40, arrival="constant"))
    await loop.run()
    attempts = sorted(loop.attempts, key=lambda a: a.seq)
    assert [a.seq for a in attempts] == list(range(40))
    lags_s = [a.schedule_lag_s for a in attempts]
    assert lags_s[1] > 0.1  # due at 10 ms, sent after the 150 ms stall
    assert lags_s[1] > lags_s[5] > lags_s[10] > 0  # sent back to back as soon as the loop is free
    assert max(lags_s[25:]) < 0.03  # caught up: the schedule did not shift
    assert offsets_of(loop) == pytest.approx([index / 100.0 for index in range(40)], abs=1e-9)


# ------------------------------------------------------------------------------------------- phases


async def test_open_loop_phases_by_count() -> None:
    loop = OpenLoop(
        FakeClient(delay_s=0.001),
        rate_point(500.0, requests=10, warmup_requests=3, cooldown_requests=2, arrival="constant"),
    )
    await loop.run()
    phases = [a.phase for a in sorted(loop.attempts, key=lambda a: a.seq)]
    assert phases == ["warmup"] * 3 + ["measured"] * 10 + ["cooldown"] * 2


async def test_open_loop_phases_by_seconds_follow_the_arrival_times() -> None:
    # 64 arrivals per second are 1/64 s apart, exactly representable: 8 in warm-up, 16 measured, 8 after.
    point = rate_point(64.0, duration_s=0.25, warmup_s=0.125, cooldown_s=0.125, arrival="constant")
    loop = OpenLoop(FakeClient(delay_s=0.001), point)
    await loop.run()
    attempts = sorted(loop.attempts, key=lambda a: a.seq)
    assert [a.phase for a in attempts] == ["warmup"] * 8 + ["measured"] * 16 + ["cooldown"] * 8


async def test_closed_loop_phases_by_seconds() -> None:
    client = FakeClient(delay_s=0.01)
    loop = ClosedLoop(client, closed_point(2, duration_s=0.15, warmup_s=0.05, cooldown_s=0.05))
    await loop.run()
    assert loop.window_start_perf_s is not None
    attempts = sorted(loop.attempts, key=lambda a: a.seq)
    phases = [a.phase for a in attempts]
    assert phases == sorted(phases, key=["warmup", "measured", "cooldown"].index)  # in order, no mixing
    counts = Counter(phases)
    assert 3 <= counts["warmup"] <= 12 and 10 <= counts["measured"] <= 34 and 3 <= counts["cooldown"] <= 12
    start_s = loop.window_start_perf_s
    measured = [a for a in attempts if a.phase == "measured"]
    assert all(0 <= a.result.send_perf_s - start_s < 0.151 for a in measured)
    assert all(a.result.send_perf_s < start_s for a in attempts if a.phase == "warmup")


async def test_closed_loop_lag_is_the_runner_delay_after_an_answer() -> None:
    client = FakeClient(delay_s=0.005)
    loop = ClosedLoop(client, closed_point(2, requests=20))
    await loop.run()
    attempts = sorted(loop.attempts, key=lambda a: a.seq)
    assert all(0 <= a.schedule_lag_s < 0.01 for a in attempts)
    ends_s = {a.result.end_perf_s for a in attempts}
    # Each worker's next request was scheduled when its previous one ended (the first two at the start).
    assert sum(a.scheduled_perf_s in ends_s for a in attempts) == 18


# ----------------------------------------------------------------------------------- records = attempts


@pytest.mark.parametrize(
    ("make_point", "phases"),
    [
        (lambda: closed_point(3, requests=12, warmup_requests=2, cooldown_requests=2), 3),
        (lambda: closed_point(3, duration_s=0.1, warmup_s=0.02, cooldown_requests=3), 3),
        (lambda: rate_point(300.0, requests=12, warmup_requests=2, cooldown_s=0.02), 3),
        (lambda: rate_point(300.0, duration_s=0.1, warmup_requests=2, max_in_flight=3), 2),
    ],
    ids=["closed-count", "closed-duration", "open-count", "open-duration-capped"],
)
async def test_every_attempt_becomes_exactly_one_record(make_point: Any, phases: int) -> None:
    client = FakeClient(delay_s=0.01, failing_calls={1, 4}, raising_calls={6})
    parts: list[PointPart] = []
    run = LoadPointRun(client, make_point(), write_part=parts.append, limits=RELAXED)
    result = await run.run()
    attempts = [a for part in parts for a in part.attempts]
    records = [r for part in parts for r in records_of(part, run.point)]
    assert len(records) == len(attempts) == len(client.sends_perf_s) == result.summary.attempts
    assert sorted(a.seq for a in attempts) == list(range(len(attempts)))
    assert len({r.request_id for r in records}) == len(records)
    assert Counter(r.error_class for r in records if r.status == "error") == {HTTP_5XX: 2, CLIENT_ERROR: 1}
    assert [p for p in ("warmup", "measured", "cooldown") if any(r.phase == p for r in records)] == [
        "warmup",
        "measured",
        "cooldown",
    ][:phases]


def records_of(part: PointPart, point: LoadPoint) -> list[RequestRecord]:
    return build_records(
        part.attempts, point, CONTEXT, EpochClock.start(), get_tokenizer("simple"), part.check
    )


async def test_a_client_that_ignores_its_timeout_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "TIMEOUT_GRACE_S", 0.05)
    client = FakeClient(delay_s=0.001, hanging_calls={2})
    loop = OpenLoop(client, rate_point(200.0, requests=5, timeout_s=0.1))
    started_s = perf_counter()
    await loop.run()
    assert perf_counter() - started_s < 1.0
    hung = next(a for a in loop.attempts if a.seq == 2).result
    assert (hung.status, hung.error_class) == ("error", TIMEOUT)
    assert hung.end_perf_s - hung.send_perf_s == pytest.approx(0.15, abs=0.05)
    assert sum(a.result.status == "ok" for a in loop.attempts) == 4


async def test_a_cancelled_open_loop_keeps_its_in_flight_requests() -> None:
    client = FakeClient(delay_s=10.0)
    parts: list[PointPart] = []
    run = LoadPointRun(client, rate_point(100.0, requests=1000), write_part=parts.append, limits=RELAXED)
    task = asyncio.create_task(run.run())
    await wait_until(lambda: len(client.sends_perf_s) >= 5, "five arrivals")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    attempts = [a for part in parts for a in part.attempts]
    assert len(attempts) == len(client.sends_perf_s) >= 5
    assert {a.result.error_message for a in attempts} == {"cancelled"}
    assert run.summary().attempts == len(attempts)


# ------------------------------------------------------------------------------------------ self-check


async def test_a_lag_limit_of_zero_marks_the_load_point_client_bound() -> None:
    parts: list[PointPart] = []
    limits = ClientCheck(max_schedule_lag_p99_s=0.0, max_runner_cpu_fraction=100.0)
    run = LoadPointRun(
        FakeClient(delay_s=0.001), rate_point(200.0, requests=20), write_part=parts.append, limits=limits
    )
    result = await run.run()
    assert result.client_bound
    assert result.reasons and result.reasons[0].startswith("schedule lag p99")
    records = [r for part in parts for r in records_of(part, run.point)]
    assert {r.client_bound for r in records} == {True}
    assert len({r.runner_cpu_fraction for r in records}) == 1  # one part: one figure on every row


async def test_a_runner_short_of_cpu_is_client_bound_at_the_default_limits() -> None:
    # A CPU clock that advances 95 % as fast as the wall clock: the runner process is busy 0.95 of a core.
    started_s = perf_counter()
    parts: list[PointPart] = []
    run = LoadPointRun(
        FakeClient(delay_s=0.005),
        closed_point(1, requests=10),
        write_part=parts.append,
        limits=ClientCheck(),
        cpu_clock=lambda: 0.95 * (perf_counter() - started_s),
    )
    result = await run.run()
    assert result.client_bound
    assert result.check.runner_cpu_fraction == pytest.approx(0.95, abs=0.01)
    assert result.reasons == (f"runner CPU {result.check.runner_cpu_fraction:.2f} > 0.9 of a core",)
    assert {r.client_bound for part in parts for r in records_of(part, run.point)} == {True}


async def test_a_cpu_hogging_client_is_measured_on_the_process_clock() -> None:
    # The fake spins 9 ms per call between 1 ms sleeps: about 0.9 of a core on an idle machine, and
    # still several times an idle runner's share when other processes crowd the cores.
    parts: list[PointPart] = []
    limits = ClientCheck(max_schedule_lag_p99_s=10.0, max_runner_cpu_fraction=0.1)
    client = FakeClient(delay_s=0.001, busy_s=0.009)
    run = LoadPointRun(client, closed_point(1, requests=40), write_part=parts.append, limits=limits)
    result = await run.run()
    assert result.client_bound, result.check
    assert any(reason.startswith("runner CPU") for reason in result.reasons)
    assert {r.client_bound for part in parts for r in records_of(part, run.point)} == {True}


async def test_an_idle_client_within_its_limits_is_not_client_bound() -> None:
    parts: list[PointPart] = []
    limits = ClientCheck(max_schedule_lag_p99_s=0.5, max_runner_cpu_fraction=0.9)
    run = LoadPointRun(
        FakeClient(delay_s=0.02), rate_point(50.0, requests=20), write_part=parts.append, limits=limits
    )
    result = await run.run()
    assert not result.client_bound, result.check
    assert result.check.schedule_lag_p99_s is not None and result.check.schedule_lag_p99_s < 0.5
    records = [r for part in parts for r in records_of(part, run.point)]
    assert {r.client_bound for r in records} == {False}
    assert {r.runner_cpu_count for r in records} == {result.check.runner_cpu_count}
    assert result.check.runner_cpu_count >= 1


def test_the_verdict_names_each_limit_it_passed() -> None:
    limits = ClientCheck(max_schedule_lag_p99_s=0.05, max_runner_cpu_fraction=0.9)
    lags_s = [0.001] * 98 + [0.2, 0.3]
    check = judge(lags_s, 0.95, 2, limits)
    assert check.client_bound
    assert check.schedule_lag_p99_s == pytest.approx(float(np.percentile(lags_s, 99)))
    assert [r.split(" ")[0] for r in check.reasons] == ["schedule", "runner"]
    assert not judge([0.001] * 100, 0.5, 2, limits).client_bound
    assert judge([], 0.95, 2, limits).reasons == ("runner CPU 0.95 > 0.9 of a core",)  # no measured: CPU only
    starved = judge([0.001] * 100, 0.3, 2, limits, loop_lag_p99_s=0.12)
    assert starved.client_bound and starved.loop_lag_p99_s == 0.12
    assert starved.reasons == (
        "event loop late p99 120.0 ms > 20 ms (the runner waited for a CPU core: its timestamps are late)",
    )
    assert not judge([0.001] * 100, 0.3, 2, limits, loop_lag_p99_s=0.002).client_bound


def test_cpu_meter_is_cpu_time_over_wall_time() -> None:
    clock = {"cpu": 10.0, "wall": 100.0}
    meter = CpuMeter(cpu_clock=lambda: clock["cpu"], wall_clock=lambda: clock["wall"])
    clock.update(cpu=11.5, wall=102.0)
    assert meter.fraction() == 0.75


# ------------------------------------------------------------------------------------- part-wise writing


async def test_a_long_load_point_is_written_in_parts() -> None:
    parts: list[PointPart] = []
    run = LoadPointRun(
        FakeClient(delay_s=0.002),
        rate_point(400.0, duration_s=0.5, arrival="constant"),
        write_part=parts.append,
        limits=RELAXED,
        flush_interval_s=0.1,
        flush_max_records=1_000_000,
    )
    result = await run.run()
    assert 4 <= len(parts) <= 7  # every 0.1 s of a 0.5 s load point, plus the rest at the end
    assert [p.final for p in parts] == [False] * (len(parts) - 1) + [True]
    seqs = [a.seq for part in parts for a in part.attempts]
    assert sorted(seqs) == list(range(len(seqs))) and len(seqs) == result.summary.attempts == 200
    assert result.parts_written == len(parts)
    assert result.check == parts[-1].check  # the last part carries the whole load point's figures


async def test_parts_are_cut_every_n_records() -> None:
    parts: list[PointPart] = []
    run = LoadPointRun(
        FakeClient(delay_s=0.001),
        closed_point(2, requests=35),
        write_part=parts.append,
        limits=RELAXED,
        flush_max_records=10,
    )
    await run.run()
    sizes = [len(p.attempts) for p in parts]
    assert sum(sizes) == 35 and len(sizes) >= 3 and max(sizes) <= 12


def test_tally_added_in_parts_equals_the_summary_of_all() -> None:
    def attempt(seq: int, phase: Any, error_class: str | None) -> Attempt:
        result = InvocationResult(send_perf_s=0.0, end_perf_s=1.0)
        if error_class:
            result.fail(error_class, f"{error_class} #{seq}")
        return Attempt(seq, phase, 0.0, PROMPTS[0], result)

    attempts = [
        attempt(0, "warmup", TIMEOUT),
        attempt(1, "measured", HTTP_5XX),
        attempt(2, "measured", None),
        attempt(3, "cooldown", TIMEOUT),
        attempt(4, "measured", HTTP_5XX),
    ]
    tally = LoadPointTally()
    tally.add(attempts[:2])
    tally.add(attempts[2:])
    assert tally.summary() == summarize(attempts)
    assert (tally.summary().measured, tally.summary().dominant_error_class) == (3, HTTP_5XX)
    assert tally.summary().sample_error_message == "http_5xx #1"


def test_record_fields_match_the_schema_one_to_one() -> None:
    assert sorted(f.name for f in dataclasses.fields(RequestRecord)) == sorted(RECORD_SCHEMA.names)
