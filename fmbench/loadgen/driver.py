"""One load point from first request to last record: its schedule, its parts as it runs, its self-check."""

from __future__ import annotations

import array
import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

import numpy as np

from fmbench.config import ClientCheck
from fmbench.endpoints.base import EndpointClient
from fmbench.loadgen.closed_loop import ClosedLoop
from fmbench.loadgen.engine import LoadEngine
from fmbench.loadgen.open_loop import OpenLoop
from fmbench.loadgen.points import LoadPoint
from fmbench.loadgen.recording import (
    Attempt,
    LoadPointSummary,
    LoadPointTally,
    RecordContext,
    build_records,
)
from fmbench.loadgen.selfcheck import (
    CpuMeter,
    LoopLagMeter,
    SelfCheck,
    judge,
    process_cpu_s,
    usable_cpu_count,
)
from fmbench.loadgen.timebase import EpochClock
from fmbench.records import RecordWriter, RequestRecord
from fmbench.tokenizer import Tokenizer

# A long load point is written in parts, so memory stays bounded and a killed runner keeps most of it.
FLUSH_INTERVAL_S = 10.0
FLUSH_MAX_RECORDS = 5_000
# A part written while its load point runs is built and written in short slices with this pause between
# (records.paced_slices): a 4,000-record part then holds the GIL about 2 ms at a time, not 200 ms.
BACKGROUND_PAUSE_S = 0.001
# Load points running in this process now (LoadPointRun.run counts itself in and out, on the loop thread).
_running_points = 0


def make_engine(
    client: EndpointClient,
    point: LoadPoint,
    *,
    on_request_done: Callable[[Attempt], None] | None = None,
) -> LoadEngine:
    """The schedule a load point asks for: a closed loop for a concurrency, an open loop for a rate."""
    if point.concurrency is not None:
        return ClosedLoop(client, point, on_request_done=on_request_done)
    return OpenLoop(client, point, on_request_done=on_request_done)


@dataclass(frozen=True, slots=True)
class PointPart:
    """Attempts to write as records, with the self-check as it stood when they were cut."""

    attempts: list[Attempt]
    check: SelfCheck
    final: bool

    @property
    def pause_s(self) -> float:
        """How a writer paces its work on this part: with pauses while any load point of the process runs.

        That is this part's own point until its final part, and in a local run with parallel branches
        (one event loop) the other branches' points too.
        """
        return BACKGROUND_PAUSE_S if (not self.final or _running_points > 0) else 0.0


@dataclass(frozen=True, slots=True)
class PointResult:
    summary: LoadPointSummary
    check: SelfCheck  # over the whole load point
    client_bound: bool  # the whole load point or any part written before its end
    reasons: tuple[str, ...]
    max_in_flight: int
    parts_written: int  # the final part is always handed over, even empty, as it carries the final check
    wall_s: float


class LoadPointRun:
    """Runs one load point and hands its attempts to ``write_part`` in parts, each with its self-check.

    A part is cut every ``flush_interval_s`` seconds or ``flush_max_records`` attempts, and once at the
    end. Each part's self-check covers the load point from its start to the cut (CPU over that wall
    time, p99 schedule lag over the measured requests so far), so the final part carries the figures of
    the whole load point, and a point written in one part has the same figures on every row. A part is
    client-bound if its check says so; the load point is client-bound if any part was.

    ``write_part`` runs in a worker thread (building records and writing Parquet must not stall the
    event loop's timing); on cancellation the remaining attempts are written synchronously before the
    cancellation goes on.
    """

    def __init__(
        self,
        client: EndpointClient,
        point: LoadPoint,
        *,
        write_part: Callable[[PointPart], None],
        limits: ClientCheck | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        flush_max_records: int = FLUSH_MAX_RECORDS,
        on_request_done: Callable[[Attempt], None] | None = None,
        cpu_clock: Callable[[], float] = process_cpu_s,
        cpu_count: int | None = None,
    ) -> None:
        self.point = point
        self.engine = make_engine(client, point, on_request_done=self._request_done)
        self._write_part = write_part
        self._limits = limits or ClientCheck()
        self._flush_interval_s = flush_interval_s
        self._flush_max_records = max(1, flush_max_records)
        self._on_request_done = on_request_done
        self._cpu_clock = cpu_clock
        self._cpu_count = cpu_count if cpu_count is not None else usable_cpu_count()
        self._cpu: CpuMeter | None = None
        self._loop_lag = LoopLagMeter()
        self._tally = LoadPointTally()
        self._measured_lags_s = array.array("d")
        self._wake = asyncio.Event()
        self._stopping = False
        self._first_bound: SelfCheck | None = None
        self._parts = 0
        self._writes = _PendingWrites()

    async def run(self) -> PointResult:
        global _running_points
        started_s = perf_counter()
        self._cpu = CpuMeter(self._cpu_clock)
        self._loop_lag.start()
        flusher = asyncio.create_task(self._flush_periodically(), name="fmbench-flusher")
        _running_points += 1
        try:
            await self.engine.run()
        except BaseException:
            _running_points -= 1
            flusher.cancel()
            self._loop_lag.stop_now()
            # Also on cancellation or a crash: what was measured is kept (no await while cancelled), and
            # a part a worker thread is still writing is on storage before the cancellation goes on.
            try:
                self._hand_over(self._cut(final=True))
            finally:
                self._writes.wait()
            raise
        _running_points -= 1
        try:
            await self._loop_lag.stop()
        finally:
            # Also when cancelled here, after the last request: the whole point is still written.
            self._stopping = True
            self._wake.set()
            try:
                await flusher  # re-raises a failed interim write, but only after the rest is written below
            finally:
                final = self._cut(final=True)
                await self._writes.write(self._hand_over, final)
        return PointResult(
            summary=self._tally.summary(),
            check=final.check,
            client_bound=self._first_bound is not None,
            reasons=final.check.reasons or self._earlier_reasons(),
            max_in_flight=self.engine.max_in_flight,
            parts_written=self._parts,
            wall_s=perf_counter() - started_s,
        )

    def summary(self) -> LoadPointSummary:
        """Counts of the attempts cut so far: all of them once ``run`` returned or raised."""
        return self._tally.summary()

    def _earlier_reasons(self) -> tuple[str, ...]:
        if self._first_bound is None:
            return ()
        return tuple(f"{reason} (in a part written before the end)" for reason in self._first_bound.reasons)

    def _request_done(self, attempt: Attempt) -> None:
        if len(self.engine.attempts) >= self._flush_max_records:
            self._wake.set()
        if self._on_request_done is not None:
            self._on_request_done(attempt)

    async def _flush_periodically(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
            self._wake.clear()
            if self._stopping:
                return
            part = self._cut(final=False)
            if part.attempts:
                await self._writes.write(self._hand_over, part)

    def _cut(self, *, final: bool) -> PointPart:
        """Take the attempts so far and judge the load point up to now (no await: atomic in the loop)."""
        attempts = self.engine.take_attempts()
        self._tally.add(attempts)
        paced = self.engine.shows_client_pace
        self._measured_lags_s.extend(a.schedule_lag_s for a in attempts if a.is_measured and paced(a))
        cpu_fraction = self._cpu.fraction() if self._cpu is not None else 0.0
        check = judge(
            np.frombuffer(self._measured_lags_s),
            cpu_fraction,
            self._cpu_count,
            self._limits,
            self._loop_lag.p99_s(),
        )
        if check.client_bound and self._first_bound is None:
            self._first_bound = check
        return PointPart(attempts, check, final)

    def _hand_over(self, part: PointPart) -> None:
        self._parts += 1
        self._write_part(part)


class _PendingWrites:
    """Parts handed to worker threads: a cancellation may stop the wait for one, never the write.

    ``asyncio.to_thread`` cancelled while its job is still queued drops the job, and cancelled while the
    job runs lets the caller go on before the part is on storage; a SIGTERM at that moment would lose the
    part or count the records on storage without it. Here the job is shielded from the cancellation, and
    a cancelled caller waits (blocking, as nothing else should run then) until every part is written.
    """

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._pending = 0

    async def write(self, hand_over: Callable[[PointPart], None], part: PointPart) -> None:
        with self._idle:
            self._pending += 1

        def job() -> None:
            try:
                hand_over(part)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

        written = asyncio.get_running_loop().run_in_executor(None, job)
        try:
            await asyncio.shield(written)
        except asyncio.CancelledError:
            self.wait()
            raise

    def wait(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0)


@dataclass(frozen=True, slots=True)
class PartRecorder:
    """A load point's ``write_part``: each part it cuts becomes records and one Parquet part of the branch.

    The runner's, and a benchmark's (``bench/common.py``), so that a benchmark pays what a user pays.
    """

    writer: RecordWriter
    point: LoadPoint
    context: RecordContext
    clock: EpochClock
    tokenizer: Tokenizer

    def __call__(self, part: PointPart) -> None:
        self.record(part)

    def record(self, part: PointPart) -> list[RequestRecord]:
        """Write the part; its records are returned for a caller that also inspects them."""
        pause_s = part.pause_s
        records = build_records(
            part.attempts, self.point, self.context, self.clock, self.tokenizer, part.check, pause_s=pause_s
        )
        self.writer.extend(records)
        self.writer.flush(pause_s=pause_s)
        return records
