"""The runner's CPU meter at the resolution a short load point needs."""

from __future__ import annotations

from time import perf_counter

from fmbench.loadgen.selfcheck import CpuMeter, process_cpu_s


def _spin_s(wall_s: float) -> None:
    end_s = perf_counter() + wall_s
    while perf_counter() < end_s:
        pass


def test_a_short_busy_point_is_measured_as_at_most_one_core() -> None:
    # One thread spinning for 3 ms uses at most 3 ms of CPU: a clock in 10 ms ticks reads 0 or 10 ms of it,
    # that is an idle runner or more than three cores busy.
    fractions = []
    for _ in range(5):
        meter = CpuMeter()
        _spin_s(0.003)
        fractions.append(meter.fraction())
    assert all(0.0 < fraction <= 1.05 for fraction in fractions), fractions
    # Some of the five points ran without being preempted; those were busy nearly all the time.
    assert max(fractions) > 0.5, fractions


def test_the_process_cpu_clock_moves_in_steps_far_below_a_millisecond() -> None:
    steps_s = []
    previous_s = process_cpu_s()
    while len(steps_s) < 20:
        now_s = process_cpu_s()
        if now_s != previous_s:
            steps_s.append(now_s - previous_s)
            previous_s = now_s
    assert max(steps_s) < 0.001, steps_s
