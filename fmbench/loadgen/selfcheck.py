"""The client self-check: did the runner keep its schedule, or was it the bottleneck of a load point?"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter, process_time

import numpy as np

from fmbench.config import ClientCheck

HEARTBEAT_INTERVAL_S = 0.01
# A p99 of fewer beats is about their maximum: one stall (a start-up, a part written) would decide it.
MIN_HEARTBEATS = 100


def process_cpu_s() -> float:
    """CPU seconds (user + system, all threads) this process has used; child processes (emulators) are not
    counted.

    Read from the process CPU clock (``CLOCK_PROCESS_CPUTIME_ID`` on Linux), which counts nanoseconds: the
    kernel's per-process tick counts (``/proc/self/stat``, what psutil reads) move in 10 ms steps, so a load
    point of a few milliseconds read as zero or as several cores busy, and could be judged client-bound.
    """
    return process_time()


def usable_cpu_count() -> int:
    """Cores this process may run on (its affinity where the OS has one), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class CpuMeter:
    """Process CPU time over wall time since the meter started: 1.0 is one core busy all the time.

    One core is the natural unit because the engine runs on one event loop thread; a fraction near 1.0
    means the loop had no idle time left, so every timing it took was delayed by its own work. The figure
    covers the whole runner process: branches running in parallel share one loop and one process.
    """

    def __init__(
        self,
        cpu_clock: Callable[[], float] = process_cpu_s,
        wall_clock: Callable[[], float] = perf_counter,
    ) -> None:
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self.start_cpu_s = cpu_clock()
        self.start_wall_s = wall_clock()

    def fraction(self) -> float:
        wall_s = self._wall_clock() - self.start_wall_s
        if wall_s <= 0:
            return 0.0
        return max(0.0, (self._cpu_clock() - self.start_cpu_s) / wall_s)


class LoopLagMeter:
    """How late the event loop runs its callbacks: a heartbeat every 10 ms records how late it woke.

    The runner's CPU and its schedule lag miss a runner that other processes starve: its own CPU stays low,
    and its requests leave "on time" by a clock read as late as everything else, yet every timestamp it
    takes (first token, each chunk) is late by as long as the loop waited for a core. A sleep that wakes
    late shows it: a loop that keeps up wakes within a millisecond or two (asyncio rounds its timeouts up
    to the millisecond); a starved or blocked loop wakes as late as it was kept from running. The p99 is
    given from ``MIN_HEARTBEATS`` beats on (a second of load): a shorter load point is judged on its
    schedule lag and CPU alone.
    """

    def __init__(self, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lateness_s = array.array("d")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="fmbench-heartbeat")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stop_now(self) -> None:
        """Stop without waiting (for paths that may not await, e.g. while cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    @property
    def beats(self) -> int:
        return len(self._lateness_s)

    def p99_s(self) -> float | None:
        """p99 lateness of the beats so far; None before ``MIN_HEARTBEATS`` beats."""
        if len(self._lateness_s) < MIN_HEARTBEATS:
            return None
        return lag_p99_s(np.frombuffer(self._lateness_s))

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        lateness_s = self._lateness_s
        while True:
            due_s = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            lateness_s.append(max(0.0, loop.time() - due_s))


@dataclass(frozen=True, slots=True)
class SelfCheck:
    """The runner's verdict on (part of) a load point, written onto each of its records."""

    runner_cpu_fraction: float
    runner_cpu_count: int
    schedule_lag_p99_s: float | None
    client_bound: bool
    reasons: tuple[str, ...] = ()
    loop_lag_p99_s: float | None = None

    @property
    def reason_text(self) -> str:
        return "; ".join(self.reasons)


def lag_p99_s(lags_s: Sequence[float] | np.ndarray) -> float | None:
    """p99 with the report's method (linear interpolation, numpy's default), so SQL and runner agree."""
    if len(lags_s) == 0:
        return None
    return float(np.percentile(np.asarray(lags_s, dtype=float), 99))


def judge(
    measured_lags_s: Sequence[float] | np.ndarray,
    cpu_fraction: float,
    cpu_count: int,
    limits: ClientCheck,
    loop_lag_p99_s: float | None = None,
) -> SelfCheck:
    """Client-bound when the measured requests' p99 schedule lag, the runner's CPU or the p99 lateness of
    its event loop (``LoopLagMeter``) passes its limit.

    A load point without measured requests is judged on CPU and loop lag alone. In an open loop with
    max_in_flight, arrivals held back by the cap are lag too: the runner did not deliver the offered rate,
    so the point describes the cap, not the endpoint.
    """
    p99_s = lag_p99_s(measured_lags_s)
    reasons = []
    if p99_s is not None and p99_s > limits.max_schedule_lag_p99_s:
        reasons.append(
            f"schedule lag p99 {p99_s * 1000:.1f} ms > {limits.max_schedule_lag_p99_s * 1000:g} ms"
        )
    if cpu_fraction > limits.max_runner_cpu_fraction:
        reasons.append(f"runner CPU {cpu_fraction:.2f} > {limits.max_runner_cpu_fraction:g} of a core")
    if loop_lag_p99_s is not None and loop_lag_p99_s > limits.max_loop_lag_p99_s:
        reasons.append(
            f"event loop late p99 {loop_lag_p99_s * 1000:.1f} ms > {limits.max_loop_lag_p99_s * 1000:g} ms "
            "(the runner waited for a CPU core: its timestamps are late)"
        )
    return SelfCheck(
        runner_cpu_fraction=cpu_fraction,
        runner_cpu_count=cpu_count,
        schedule_lag_p99_s=p99_s,
        client_bound=bool(reasons),
        reasons=tuple(reasons),
        loop_lag_p99_s=loop_lag_p99_s,
    )
