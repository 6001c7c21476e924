"""The client self-check: did the runner keep its schedule, or was it the bottleneck of a load point?"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

import numpy as np
import psutil

from fmbench.config import ClientCheck

_PROCESS = psutil.Process()


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process has used; child processes (emulators) are not counted."""
    times = _PROCESS.cpu_times()
    return float(times.user + times.system)


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


@dataclass(frozen=True, slots=True)
class SelfCheck:
    """The runner's verdict on (part of) a load point, written onto each of its records."""

    runner_cpu_fraction: float
    runner_cpu_count: int
    schedule_lag_p99_s: float | None
    client_bound: bool
    reasons: tuple[str, ...] = ()

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
) -> SelfCheck:
    """Client-bound when the measured requests' p99 schedule lag or the runner's CPU passes its limit.

    A load point without measured requests is judged on CPU alone. In an open loop with max_in_flight,
    arrivals held back by the cap are lag too: the runner did not deliver the offered rate, so the
    point describes the cap, not the endpoint.
    """
    p99_s = lag_p99_s(measured_lags_s)
    reasons = []
    if p99_s is not None and p99_s > limits.max_schedule_lag_p99_s:
        reasons.append(
            f"schedule lag p99 {p99_s * 1000:.1f} ms > {limits.max_schedule_lag_p99_s * 1000:g} ms"
        )
    if cpu_fraction > limits.max_runner_cpu_fraction:
        reasons.append(f"runner CPU {cpu_fraction:.2f} > {limits.max_runner_cpu_fraction:g} of a core")
    return SelfCheck(
        runner_cpu_fraction=cpu_fraction,
        runner_cpu_count=cpu_count,
        schedule_lag_p99_s=p99_s,
        client_bound=bool(reasons),
        reasons=tuple(reasons),
    )
