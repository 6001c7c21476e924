"""The closed-loop engine and record building, against an in-memory endpoint client (no network)."""

from __future__ import annotations

import asyncio
from time import perf_counter

import pytest
from fakes import GAPS_S, FakeClient, wait_until

from fmbench.config import InferenceParameters
from fmbench.endpoints.base import CLIENT_ERROR, HTTP_5XX, TIMEOUT, InvocationResult
from fmbench.loadgen import (
    Attempt,
    ClosedLoop,
    EpochClock,
    LoadPoint,
    LoadPointError,
    RecordContext,
    build_records,
    summarize,
)
from fmbench.payloads import Prompt
from fmbench.tokenizer import get_tokenizer

PARAMS = InferenceParameters(max_new_tokens=4, stream=True)
PROMPTS = [
    Prompt("p0", "What is the capital of France?", 7, None),
    Prompt("p1", "Name two rivers.", 4, None),
    Prompt("p2", "Why is the sky blue?", 6, None),
]
CONTEXT = RecordContext(
    suite_name="suite",
    branch_id="emu-12345678",
    target_name="emu",
    platform="emulator",
    model="m",
    container=None,
    instance_type="ml.g5.2xlarge",
    instance_count=1,
    instance_price_per_hour_usd=1.5,
    api="chat",
)


def point(concurrency: int, requests: int | None = None, **kwargs: object) -> LoadPoint:
    return LoadPoint(
        concurrency=concurrency,
        payload_bin="small",
        prompts=PROMPTS,
        params=PARAMS,
        timeout_s=5.0,
        requests=requests,
        **kwargs,  # type: ignore[arg-type]
    )


def records_of(loop: ClosedLoop, clock: EpochClock | None = None):
    return build_records(
        loop.attempts, loop.point, CONTEXT, clock or EpochClock.start(), get_tokenizer("simple")
    )


async def test_keeps_exactly_n_requests_in_flight() -> None:
    client = FakeClient(delay_s=0.01)
    loop = ClosedLoop(client, point(4, requests=40))
    await loop.run()
    assert client.max_in_flight == 4
    assert loop.max_in_flight == 4
    assert len(loop.attempts) == 40
    assert sorted(a.seq for a in loop.attempts) == list(range(40))


async def test_a_slow_request_holds_up_only_its_own_worker() -> None:
    # Call 0 takes 300 ms, the other 59 take 10 ms. Lock-step waves of 4 would need 300 + 14 * 10 ms;
    # a closed loop lets the three free workers finish the rest while the slow request is still out.
    client = FakeClient(delay_s=0.01, delays_s={0: 0.3})
    loop = ClosedLoop(client, point(4, requests=60))
    await loop.run()
    slow_end_s = client.ends_perf_s[0]
    finished_meanwhile = sum(
        1 for call, end_s in client.ends_perf_s.items() if call != 0 and end_s < slow_end_s
    )
    assert finished_meanwhile == 59  # in lock-step waves of 4 it would be 3
    assert loop.max_in_flight == 4


async def test_warmup_requests_are_flagged_and_counted_apart() -> None:
    client = FakeClient()
    loop = ClosedLoop(client, point(2, requests=10, warmup_requests=3))
    await loop.run()
    records = records_of(loop)
    assert len(records) == 13
    assert sorted(r.request_id for r in records if r.phase == "warmup") == [
        "emu-12345678-c2-small-000000",
        "emu-12345678-c2-small-000001",
        "emu-12345678-c2-small-000002",
    ]
    assert sum(r.phase == "measured" for r in records) == 10
    assert {r.concurrency for r in records} == {2}
    summary = summarize(loop.attempts)
    assert (summary.attempts, summary.measured, summary.errors) == (13, 10, 0)


async def test_duration_rule_stops_starting_requests_after_the_window() -> None:
    client = FakeClient(delay_s=0.02)
    loop = ClosedLoop(client, point(2, duration_s=0.2, warmup_requests=2))
    await loop.run()
    assert loop.window_start_perf_s is not None
    measured = [a for a in loop.attempts if not a.is_warmup]
    warmup = [a for a in loop.attempts if a.is_warmup]
    assert len(warmup) == 2
    sends_s = [a.result.send_perf_s - loop.window_start_perf_s for a in measured]
    assert min(sends_s) >= 0
    assert max(sends_s) < 0.2  # nothing started after the window closed ...
    assert max(sends_s) > 0.15  # ... and the window was used to its end
    assert 12 <= len(measured) <= 22  # 2 workers x 0.2 s / 20 ms, give or take scheduling
    assert len(loop.attempts) == len(client.prompts_seen)


async def test_every_attempt_becomes_a_record_errors_and_client_bugs_included() -> None:
    client = FakeClient(failing_calls={1, 4, 7}, raising_calls={5})
    loop = ClosedLoop(client, point(3, requests=12))
    await loop.run()
    records = records_of(loop)
    assert len(records) == len(client.prompts_seen) == 12
    by_class = sorted(r.error_class for r in records if r.status == "error")
    assert by_class == [CLIENT_ERROR, HTTP_5XX, HTTP_5XX, HTTP_5XX]
    bug = next(r for r in records if r.error_class == CLIENT_ERROR)
    assert bug.error_message == "RuntimeError: bug in a client"
    failed = next(r for r in records if r.error_class == HTTP_5XX)
    assert (failed.http_status, failed.ttft_s, failed.itl_s, failed.completion_tokens) == (
        500,
        None,
        [],
        None,
    )
    assert failed.prompt_tokens is not None  # the prompt's own count is known even when the request failed
    assert failed.response_text is None


async def test_cancelled_load_point_still_records_its_in_flight_requests() -> None:
    client = FakeClient(delay_s=0.05)
    loop = ClosedLoop(client, point(3, requests=100))
    task = asyncio.create_task(loop.run())
    # Cancelled once the first round has answered and the next is in flight.
    await wait_until(lambda: len(client.prompts_seen) > 3, "a second round of requests")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(loop.attempts) == len(client.prompts_seen)
    cancelled = [a for a in loop.attempts if a.result.error_message == "cancelled"]
    assert len(cancelled) == 3
    assert all(a.result.error_class == CLIENT_ERROR for a in cancelled)


async def test_server_usage_is_preferred_and_marked_as_such() -> None:
    loop = ClosedLoop(FakeClient(usage=(11, 4)), point(1, requests=2))
    await loop.run()
    records = records_of(loop)
    assert [(r.prompt_tokens, r.completion_tokens, r.token_source) for r in records] == [
        (11, 4, "server")
    ] * 2


async def test_token_counts_fall_back_to_the_workload_tokenizer() -> None:
    loop = ClosedLoop(FakeClient(usage=None, text=" Paris, France."), point(1, requests=3))
    await loop.run()
    records = records_of(loop)
    # "Paris" "," "France" "." with the simple tokenizer; prompt counts are those of the payload builder
    assert [(r.prompt_tokens, r.completion_tokens, r.token_source) for r in records] == [
        (7, 4, "tokenizer"),
        (4, 4, "tokenizer"),
        (6, 4, "tokenizer"),
    ]


async def test_partial_usage_is_completed_locally_and_marked_mixed() -> None:
    loop = ClosedLoop(FakeClient(usage=(None, 9), text="a b"), point(1, requests=1))
    await loop.run()
    (record,) = records_of(loop)
    assert (record.prompt_tokens, record.completion_tokens, record.token_source) == (7, 9, "mixed")


async def test_prompts_are_used_round_robin_by_sequence_number() -> None:
    client = FakeClient()
    loop = ClosedLoop(client, point(1, requests=7))
    await loop.run()
    assert client.prompts_seen == [PROMPTS[i % 3].text for i in range(7)]
    loop = ClosedLoop(FakeClient(), point(3, requests=9))
    await loop.run()
    for record in records_of(loop):
        seq = int(record.request_id.rsplit("-", 1)[1])
        assert record.prompt_id == f"p{seq % 3}"


async def test_times_share_one_anchor_and_derive_from_perf_counter() -> None:
    clock = EpochClock(anchor_epoch_s=1_000_000.0, anchor_perf_s=perf_counter())
    loop = ClosedLoop(FakeClient(delay_s=0.01), point(2, requests=6))
    await loop.run()
    records = records_of(loop, clock)
    for attempt, record in zip(loop.attempts, records, strict=True):
        result = attempt.result
        assert record.send_epoch_s == clock.to_epoch_s(result.send_perf_s)
        assert 0 <= record.send_epoch_s - record.scheduled_epoch_s < 0.005  # closed loop: sent when free
        assert record.ttft_s == pytest.approx(0.001)
        assert record.latency_s == pytest.approx(result.end_perf_s - result.send_perf_s)
        assert record.end_epoch_s == pytest.approx(record.send_epoch_s + record.latency_s)
        assert record.itl_s == pytest.approx(list(GAPS_S))
        assert 1_000_000.0 <= record.send_epoch_s < 1_000_001.0
        assert record.response_text == " one two three four"
        assert (record.load_mode, record.request_rate_per_s, record.payload_bin) == (
            "concurrency",
            None,
            "small",
        )


async def test_non_streaming_records_have_no_ttft_or_gaps() -> None:
    result = InvocationResult(send_perf_s=1.0, end_perf_s=1.5, text="x y", usage_completion_tokens=2)
    attempt = Attempt(seq=0, phase="measured", scheduled_perf_s=1.0, prompt=PROMPTS[0], result=result)
    params = InferenceParameters(stream=False)
    no_stream = LoadPoint(1, "small", PROMPTS, params, 5.0, requests=1)
    (record,) = build_records([attempt], no_stream, CONTEXT, EpochClock(0.0, 0.0), get_tokenizer("simple"))
    assert (record.ttft_s, record.first_token_epoch_s, record.itl_s, record.latency_s) == (
        None,
        None,
        [],
        0.5,
    )


def test_summary_names_the_dominant_error_of_the_measured_window() -> None:
    def attempt(seq: int, warmup: bool, error_class: str | None) -> Attempt:
        result = InvocationResult(send_perf_s=0.0, end_perf_s=1.0)
        if error_class:
            result.fail(error_class, f"{error_class} #{seq}")
        return Attempt(seq, "warmup" if warmup else "measured", 0.0, PROMPTS[0], result)

    attempts = [attempt(0, True, None), attempt(1, False, TIMEOUT), attempt(2, False, HTTP_5XX)]
    attempts += [attempt(3, False, HTTP_5XX)]
    summary = summarize(attempts)
    assert summary.all_measured_failed
    assert (summary.dominant_error_class, summary.sample_error_message) == (HTTP_5XX, "http_5xx #2")
    assert not summarize([*attempts, attempt(4, False, None)]).all_measured_failed


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"requests": None}, "exactly one"),
        ({"requests": 3, "duration_s": 1.0}, "exactly one"),
        ({"requests": 3, "prompts": []}, "no prompts"),
        ({"requests": 3, "concurrency": None}, "exactly one of concurrency or request_rate_per_s"),
        ({"requests": 3, "request_rate_per_s": 5.0}, "exactly one of concurrency or request_rate_per_s"),
    ],
)
def test_load_point_rejects_what_no_engine_can_run(kwargs: dict[str, object], problem: str) -> None:
    base: dict[str, object] = {
        "concurrency": 1,
        "payload_bin": "b",
        "prompts": PROMPTS,
        "params": PARAMS,
        "timeout_s": 1.0,
    }
    with pytest.raises(LoadPointError, match=problem):
        LoadPoint(**{**base, **kwargs})  # type: ignore[arg-type]


async def test_a_held_up_start_is_recorded_but_does_not_make_a_closed_loop_client_bound() -> None:
    import time

    from fmbench.config import ClientCheck
    from fmbench.loadgen.driver import LoadPointRun

    parts: list[object] = []
    run = LoadPointRun(
        FakeClient(delay_s=0.01),
        point(4, requests=40),
        write_part=parts.append,
        limits=ClientCheck(max_schedule_lag_p99_s=0.05, max_runner_cpu_fraction=100.0),
    )
    # Something else on the event loop holds it for 150 ms just as the load point starts.
    asyncio.get_running_loop().call_soon(time.sleep, 0.15)
    result = await run.run()
    attempts = [a for part in parts for a in part.attempts]  # type: ignore[attr-defined]
    first_round = sorted(attempts, key=lambda a: a.seq)[:4]
    assert min(a.schedule_lag_s for a in first_round) >= 0.1  # recorded as it was
    assert not result.client_bound, result.check.reasons
    assert result.check.schedule_lag_p99_s is not None and result.check.schedule_lag_p99_s < 0.05


async def test_a_closed_loop_that_falls_behind_between_answers_is_client_bound() -> None:
    import time

    from fmbench.config import ClientCheck
    from fmbench.endpoints.base import InvocationResult as Result
    from fmbench.loadgen.driver import LoadPointRun

    class SlowToFollowUp(FakeClient):
        async def invoke(
            self,
            prompt_text: str,
            params: InferenceParameters,
            timeout_s: float,
            *,
            messages: list[dict[str, str]] | None = None,
        ) -> Result:
            answer = await super().invoke(prompt_text, params, timeout_s)
            time.sleep(0.08)  # the client is busy for 80 ms after every answer, before the next request
            return answer

    run = LoadPointRun(
        SlowToFollowUp(delay_s=0.005),
        point(2, requests=12),
        write_part=lambda part: None,
        limits=ClientCheck(max_schedule_lag_p99_s=0.05, max_runner_cpu_fraction=100.0),
    )
    result = await run.run()
    assert result.client_bound
    assert result.reasons[0].startswith("schedule lag p99")


async def test_the_heartbeat_sees_a_loop_kept_from_running_and_judges_from_a_hundred_beats() -> None:
    import time

    from fmbench.loadgen.selfcheck import MIN_HEARTBEATS, LoopLagMeter

    meter = LoopLagMeter(interval_s=0.002)
    meter.start()
    await asyncio.sleep(0.05)
    assert meter.beats < MIN_HEARTBEATS and meter.p99_s() is None  # too few beats to judge
    for _ in range(4):
        time.sleep(0.06)  # the loop's thread does not run, as when other processes hold the cores
        await asyncio.sleep(0.05)
    while meter.beats < 2 * MIN_HEARTBEATS:
        await asyncio.sleep(0.01)
    await meter.stop()
    p99_s = meter.p99_s()
    # Four of some 200 beats woke about 60 ms late: the p99 is among them.
    assert p99_s is not None and p99_s > 0.04


async def test_a_runner_starved_of_cpu_is_client_bound_though_its_own_cpu_is_low() -> None:
    import time

    from fmbench.config import ClientCheck
    from fmbench.loadgen.driver import LoadPointRun

    async def other_processes() -> None:
        # Every 200 ms the runner's thread gets no core for 80 ms (time.sleep burns no CPU of its own).
        while True:
            await asyncio.sleep(0.12)
            time.sleep(0.08)

    limits = ClientCheck(max_schedule_lag_p99_s=100.0, max_runner_cpu_fraction=0.9, max_loop_lag_p99_s=0.05)
    run = LoadPointRun(
        FakeClient(delay_s=0.01), point(2, duration_s=2.0), write_part=lambda part: None, limits=limits
    )
    starving = asyncio.ensure_future(other_processes())
    try:
        result = await run.run()
    finally:
        starving.cancel()
    assert result.client_bound
    assert result.check.runner_cpu_fraction < 0.9  # the CPU limit alone would not have seen it
    assert [reason.split(" (")[0] for reason in result.reasons] == [
        f"event loop late p99 {result.check.loop_lag_p99_s * 1000:.1f} ms > 50 ms"  # type: ignore[operator]
    ]


async def test_a_ramp_up_starts_workers_spread_and_due_at_their_own_start() -> None:
    client = FakeClient(delay_s=0.3)  # longer than the ramp: the first four requests are the workers' first
    loop = ClosedLoop(client, point(4, requests=8, ramp_up_s=0.2))
    started_s = perf_counter()
    await loop.run()
    first_round = sorted(loop.attempts, key=lambda a: a.seq)[:4]
    offsets_s = [a.result.send_perf_s - started_s for a in first_round]
    # Worker i starts i x 0.2 s / 4 after the level's start: 0, 50, 100, 150 ms.
    assert offsets_s == sorted(offsets_s)
    for index, offset_s in enumerate(offsets_s):
        assert index * 0.05 <= offset_s < index * 0.05 + 0.04, offsets_s
    # Each is due at its own start, so the planned spread is not schedule lag.
    assert all(a.schedule_lag_s < 0.03 for a in first_round), [a.schedule_lag_s for a in first_round]
    assert client.max_in_flight == 4


def test_the_plan_becomes_load_points_in_sweep_order_each_loop_with_its_own_settings() -> None:
    from fmbench.config import LoadPlan

    plan = LoadPlan(
        concurrency=[2, 1],
        rates_per_s=[5.0],
        max_in_flight=3,
        ramp_up_s=1.5,
        warmup_s=2.0,
        duration_s=10.0,
        cooldown_requests=4,
        request_timeout_s=7.0,
        seed=9,
    )
    points = [LoadPoint.of_plan(plan, p, PROMPTS, PARAMS) for p in plan.points(["small", "large"])]
    assert [(p.load_label, p.payload_bin) for p in points] == [
        ("c2", "small"),
        ("c2", "large"),
        ("c1", "small"),
        ("c1", "large"),
        ("r5", "small"),
        ("r5", "large"),
    ]
    closed, rate = points[0], points[-1]
    assert (closed.ramp_up_s, closed.max_in_flight) == (1.5, None)
    assert (rate.ramp_up_s, rate.max_in_flight, rate.seed) == (0.0, 3, 9)
    assert (rate.warmup_s, rate.duration_s, rate.requests, rate.cooldown_requests) == (2.0, 10.0, None, 4)
    assert (rate.timeout_s, rate.params, list(rate.prompts)) == (7.0, PARAMS, list(PROMPTS))
