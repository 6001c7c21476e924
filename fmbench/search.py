"""The capacity search (``load.search``): a load point's SLO verdict from its records, and the next level.

The verdict uses the report's definitions (docs/metrics.md; ``report/sql/metrics.sql``, ``report/analysis``):
over the measured requests of the point, the error rate is failed / measured, and the p95 end-to-end latency
and p95 TTFT are exact percentiles (linear interpolation between the closest ranks) over the successful
ones. The search itself (``CapacitySearch``) is a plain state machine: the runner drives it with the
verdicts it measures, and the report replays it with the verdicts of the summary's rows, so both tell the
same levels in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Protocol

from fmbench.config import LoadSearch, Slo

Verdict = Literal["pass", "fail", "client_bound"]
P95 = Fraction(95, 100)
# Bisected rates are rounded to this many significant digits, so that load labels stay short.
RATE_DIGITS = 4


class MeasuredRow(Protocol):
    """The fields of a request record the verdict reads (``fmbench.records.RequestRecord`` has them)."""

    @property
    def phase(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def ttft_s(self) -> float | None: ...
    @property
    def client_bound(self) -> bool: ...


def exact_quantile(values: Iterable[float], q: Fraction = P95) -> float | None:
    """Hyndman-Fan type 7 (numpy's default): x(floor h) + (h - floor h)(x(ceil h) - x(floor h)), h = (n-1) q.

    ``q`` is a Fraction so that h is exact, as the SQL's decimal literals make it; None for no values.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    h = (len(ordered) - 1) * q
    low, high = math.floor(h), math.ceil(h)
    fraction = float(h - low)
    return ordered[low] + fraction * (ordered[high] - ordered[low])


@dataclass(frozen=True, slots=True)
class PointFigures:
    """What the SLO is judged on, for one load point (one level over one bin)."""

    measured: int
    errors: int
    latency_p95_s: float | None
    ttft_p95_s: float | None
    client_bound: bool

    @property
    def successes(self) -> int:
        return self.measured - self.errors

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.measured if self.measured else None

    @classmethod
    def of_records(cls, records: Iterable[MeasuredRow]) -> PointFigures:
        """From a load point's records (warm-up and cool-down rows are left out, as in the SQL)."""
        measured = errors = 0
        latencies: list[float] = []
        ttfts: list[float] = []
        bound = False
        for record in records:
            bound = bound or bool(record.client_bound)
            if record.phase != "measured":
                continue
            measured += 1
            if record.status != "ok":
                errors += 1
                continue
            latencies.append(record.latency_s)
            if record.ttft_s is not None:
                ttfts.append(record.ttft_s)
        return cls(measured, errors, exact_quantile(latencies), exact_quantile(ttfts), bound)


def meets(figures: PointFigures, slo: Slo) -> bool:
    """``report.analysis.meets_slo`` for one point: a success, the error rate, each p95 limit that is set."""
    rate = figures.error_rate
    if figures.successes <= 0 or rate is None or rate > slo.max_error_rate:
        return False
    if slo.p95_latency_s is not None and (
        figures.latency_p95_s is None or figures.latency_p95_s > slo.p95_latency_s
    ):
        return False
    return not (
        slo.p95_ttft_s is not None and (figures.ttft_p95_s is None or figures.ttft_p95_s > slo.p95_ttft_s)
    )


def verdict(figures: PointFigures, slo: Slo) -> Verdict:
    """A client-bound point measured the runner, not the endpoint: it neither passes nor fails."""
    if figures.client_bound:
        return "client_bound"
    return "pass" if meets(figures, slo) else "fail"


def level_verdict(verdicts: Sequence[Verdict]) -> Verdict:
    """A level runs over every bin: it passes only if every bin's point passes; client-bound wins."""
    if "client_bound" in verdicts:
        return "client_bound"
    return "pass" if verdicts and all(v == "pass" for v in verdicts) else "fail"


@dataclass(frozen=True, slots=True)
class SearchStep:
    level: float
    verdict: Verdict


@dataclass(slots=True)
class CapacitySearch:
    """Expand (start, doubling, capped at max) until a level fails or max passes; then bisect between the
    highest passing and the lowest failing level until the bracket is within the resolution. Stops early on
    a client-bound level, after ``max_points`` levels, or when ``stop`` is called (the time budget)."""

    search: LoadSearch
    steps: list[SearchStep] = field(default_factory=list)
    stop_reason: str | None = None

    @property
    def passing(self) -> float | None:
        """The highest level that passed: the capacity under the SLO found so far."""
        return max((s.level for s in self.steps if s.verdict == "pass"), default=None)

    @property
    def failing(self) -> float | None:
        return min((s.level for s in self.steps if s.verdict == "fail"), default=None)

    @property
    def found(self) -> bool:
        return self.passing is not None

    def _cast(self, level: float) -> float:
        if self.search.mode == "concurrency":
            return float(int(level))
        return float(f"{level:.{RATE_DIGITS}g}")

    def _resolved(self, passing: float, failing: float) -> bool:
        if self.search.mode == "concurrency":
            return failing - passing <= self.search.step
        return failing - passing <= self.search.tolerance * passing

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def record(self, level: float, result: Verdict) -> None:
        self.steps.append(SearchStep(level, result))
        if result == "client_bound":
            self.stop(
                f"level {level:g} was client-bound (the runner, not the endpoint, set its figures): the "
                "search stopped there, so the capacity found is a lower bound"
            )

    def next_level(self) -> float | None:
        """The level to run next, or None when the search is over (``stop_reason`` says why)."""
        if self.stop_reason is not None:
            return None
        search = self.search
        if not self.steps:
            return self._cast(search.start)
        if len(self.steps) >= search.max_points:
            self.stop(f"the budget of {search.max_points} level(s) was used")
            return None
        passing, failing = self.passing, self.failing
        if failing is None:
            assert passing is not None
            if passing >= search.max:
                self.stop(f"the highest level allowed ({search.max:g}) meets the SLO")
                return None
            return self._cast(min(passing * 2, search.max))
        if passing is None:
            self.stop(f"the first level ({search.start:g}) does not meet the SLO")
            return None
        if self._resolved(passing, failing):
            self.stop(f"bracket {passing:g}-{failing:g} is within the resolution")
            return None
        middle = self._cast((passing + failing) / 2)
        if middle in (passing, failing):
            self.stop(f"bracket {passing:g}-{failing:g} cannot be split further")
            return None
        return middle


def replay(search: LoadSearch, verdict_of: Callable[[float], Verdict | None]) -> CapacitySearch:
    """The search as the runner ran it, from the verdicts of the measured levels; a level with no verdict
    (never measured: the time budget ran out, or the branch stopped) ends it."""
    state = CapacitySearch(search)
    while (level := state.next_level()) is not None:
        result = verdict_of(level)
        if result is None:
            state.stop(f"level {level:g} was not measured (the time budget ran out or the branch stopped)")
            break
        state.record(level, result)
    return state
