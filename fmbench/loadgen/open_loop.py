"""The open-loop schedule: requests arrive at a rate (Poisson or constant), whether or not others finished."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from time import perf_counter

from fmbench.config import Arrival
from fmbench.deadlines import DeadlineTimer
from fmbench.endpoints.base import EndpointClient
from fmbench.loadgen.engine import LoadEngine
from fmbench.loadgen.points import LoadPoint, LoadPointError, Phase, PhaseTracker
from fmbench.loadgen.recording import Attempt
from fmbench.payloads import Prompt


def arrival_offsets_s(arrival: Arrival, rate_per_s: float, seed: int = 0) -> Iterator[float]:
    """Arrival times in seconds from the start of the load point, the first at 0, without end.

    Constant arrivals are ``index / rate`` (computed per index, so no rounding accumulates). Poisson
    gaps are unit exponentials from ``random.Random(seed)`` divided by the rate: the same seed gives the
    same schedule on every run and every target, and the schedules of two rates are the same arrivals
    stretched, so targets and rates are compared on common random numbers.
    """
    if rate_per_s <= 0:
        raise LoadPointError("the arrival rate must be above 0")
    if arrival == "constant":
        for index in itertools.count():
            yield index / rate_per_s
        return
    rng = random.Random(seed)
    offset_s = 0.0
    while True:
        yield offset_s
        offset_s += rng.expovariate(1.0) / rate_per_s


def schedule_s(arrival: Arrival, rate_per_s: float, count: int, seed: int = 0) -> list[float]:
    """The first ``count`` arrival offsets: a precomputed schedule, e.g. to replay or to inspect."""
    return list(itertools.islice(arrival_offsets_s(arrival, rate_per_s, seed), count))


class OpenLoop(LoadEngine):
    """Sends each request at its arrival time, measured from the arrival, not from when it could go.

    The dispatcher sleeps to absolute deadlines on the event loop's clock (with a ``DeadlineTimer``, so
    to tens of microseconds where the OS allows), so lateness never accumulates into drift. A late
    arrival (the loop was busy) is sent at once, never skipped. With ``max_in_flight``, an arrival that
    finds the cap reached waits for a free slot; arrivals keep their order and their scheduled time
    stays the arrival time, so the wait shows as schedule lag and in the latency from schedule (no
    coordinated omission). Phases follow the arrival times, so they are the same on every run whatever
    the endpoint does.
    """

    def __init__(
        self,
        client: EndpointClient,
        point: LoadPoint,
        *,
        on_request_done: Callable[[Attempt], None] | None = None,
        offsets_s: Iterable[float] | None = None,
    ) -> None:
        rate_per_s = point.request_rate_per_s
        if rate_per_s is None:
            raise LoadPointError("an open loop needs a request rate")
        super().__init__(client, point, on_request_done=on_request_done)
        self._offsets_s = (
            offsets_s if offsets_s is not None else arrival_offsets_s(point.arrival, rate_per_s, point.seed)
        )
        self.start_perf_s: float | None = None

    async def run(self) -> list[Attempt]:
        loop = asyncio.get_running_loop()
        phases = PhaseTracker(self.point)
        cap = self.point.max_in_flight
        slots = asyncio.Semaphore(cap) if cap is not None else None
        start_loop_s = loop.time()
        start_perf_s = self.start_perf_s = perf_counter()
        with DeadlineTimer(loop) as timer:
            async with asyncio.TaskGroup() as group:
                for seq, offset_s in enumerate(self._offsets_s):
                    phase = phases.classify(offset_s)
                    if phase is None:
                        break
                    prompt = self._next_prompt(seq)
                    if prompt is None:
                        break
                    await timer.sleep_until(start_loop_s + offset_s)
                    if slots is not None:
                        await slots.acquire()
                    group.create_task(self._send_in_slot(seq, phase, start_perf_s + offset_s, prompt, slots))
        return self.attempts

    async def _send_in_slot(
        self,
        seq: int,
        phase: Phase,
        scheduled_perf_s: float,
        prompt: Prompt,
        slots: asyncio.Semaphore | None,
    ) -> None:
        try:
            await self._send(seq, phase, scheduled_perf_s, prompt)
        finally:
            if slots is not None:
                slots.release()
