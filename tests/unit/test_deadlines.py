"""DeadlineTimer: waiters wake at their deadlines, never before, in order; cancel and close are clean."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys

import pytest

from fmbench import deadlines
from fmbench.deadlines import DeadlineTimer


@pytest.fixture(params=["timerfd", "loop-timers"])
def timer_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "loop-timers":
        monkeypatch.setattr(deadlines, "_TIMERFD", None)
    elif deadlines._TIMERFD is None:
        pytest.skip("no timerfd on this platform")
    return str(request.param)


def test_linux_gets_the_precise_timer() -> None:
    async def precise() -> bool:
        with DeadlineTimer() as timer:
            return timer.precise

    assert asyncio.run(precise()) is sys.platform.startswith("linux")


@pytest.mark.parametrize("exact", [True, False])
async def test_many_waiters_wake_in_deadline_order_and_never_early(timer_kind: str, exact: bool) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    start_s = loop.time()
    # Due from 20 ms on: time for all 200 to start waiting, even when the machine is busy.
    deadlines_s = [start_s + 0.02 + rng.random() * 0.05 for _ in range(200)]
    woke: list[tuple[float, float]] = []
    started_late: list[float] = []  # a waiter that starts after its deadline returns at once, out of turn

    async def wait(timer: DeadlineTimer, deadline_s: float) -> None:
        if loop.time() >= deadline_s:
            started_late.append(deadline_s)
        await timer.sleep_until(deadline_s, exact=exact)
        woke.append((deadline_s, loop.time()))

    with DeadlineTimer() as timer:
        assert timer.precise is (timer_kind == "timerfd")
        async with asyncio.TaskGroup() as group:
            for deadline_s in deadlines_s:
                group.create_task(wait(timer, deadline_s))
    assert len(woke) == len(deadlines_s)
    assert all(now_s >= deadline_s for deadline_s, now_s in woke), "a waiter woke before its deadline"
    # In deadline order, except waiters due within the same instant (microseconds apart) that may swap.
    woken_deadlines_s = [d for d, _ in woke if d not in started_late]
    assert len(woken_deadlines_s) >= 100
    assert all(b > a - 0.002 for a, b in itertools.pairwise(woken_deadlines_s))
    # Late only by scheduling: a generous bound that still fails if a deadline is missed by far.
    assert max(now_s - deadline_s for deadline_s, now_s in woke) < 0.5


async def test_a_deadline_already_passed_returns_after_one_yield(timer_kind: str) -> None:
    loop = asyncio.get_running_loop()
    with DeadlineTimer() as timer:
        other_ran = False

        async def other() -> None:
            nonlocal other_ran
            other_ran = True

        task = asyncio.create_task(other())
        await timer.sleep_until(loop.time() - 1.0)
        assert other_ran  # it yielded to the loop
        await task


async def test_an_earlier_deadline_added_later_still_wakes_first() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []
    with DeadlineTimer() as timer:

        async def wait(name: str, delay_s: float) -> None:
            await timer.sleep_until(loop.time() + delay_s)
            order.append(name)

        late = asyncio.create_task(wait("late", 0.06))
        await asyncio.sleep(0.005)
        early = asyncio.create_task(wait("early", 0.01))  # re-arms the timer for the earlier deadline
        await asyncio.gather(late, early)
    assert order == ["early", "late"]


async def test_a_cancelled_waiter_is_dropped_and_the_others_still_wake() -> None:
    loop = asyncio.get_running_loop()
    with DeadlineTimer() as timer:
        first = asyncio.create_task(timer.sleep_until(loop.time() + 0.01))
        second = asyncio.create_task(timer.sleep_until(loop.time() + 0.02))
        await asyncio.sleep(0)
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        deadline_s = loop.time() + 0.005
        await timer.sleep_until(deadline_s)  # the timer still works after a cancelled waiter's deadline
        assert loop.time() >= deadline_s


async def test_close_cancels_waiters_and_releases_the_timer() -> None:
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer()
    waiter = asyncio.create_task(timer.sleep_until(loop.time() + 60))
    await asyncio.sleep(0)
    timer.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not timer.precise
    timer.close()  # twice is harmless
