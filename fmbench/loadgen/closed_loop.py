"""The closed-loop schedule: N workers, each keeping exactly one request in flight until the stop rule."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter

from fmbench.endpoints.base import EndpointClient
from fmbench.loadgen.engine import LoadEngine
from fmbench.loadgen.points import LoadPoint, LoadPointError, Phase, PhaseTracker
from fmbench.loadgen.recording import Attempt
from fmbench.payloads import Prompt


class ClosedLoop(LoadEngine):
    """Runs one concurrency level; workers are independent, so a slow request holds up only its own.

    A worker's next request is scheduled the moment its previous one ended (the first at the load
    point's start), so the schedule lag, send minus scheduled, is the runner's own delay between
    noticing an answer and sending the next request: event-loop congestion shows up there. Sequence
    numbers and phases come from one tracker that is read and advanced without an ``await`` in between,
    so the stop rule is exact without a lock.
    """

    def __init__(
        self,
        client: EndpointClient,
        point: LoadPoint,
        *,
        on_request_done: Callable[[Attempt], None] | None = None,
    ) -> None:
        if point.concurrency is None:
            raise LoadPointError("a closed loop needs a concurrency")
        super().__init__(client, point, on_request_done=on_request_done)
        self._phases = PhaseTracker(point)
        self._next_seq = 0
        self._start_perf_s = 0.0
        self._first_seqs: set[int] = set()  # each worker's first request

    @property
    def window_start_perf_s(self) -> float | None:
        """When the measured window began (perf_counter), or None before it did."""
        start_s = self._phases.measured_start_s
        return None if start_s is None else self._start_perf_s + start_s

    async def run(self) -> list[Attempt]:
        self._start_perf_s = perf_counter()
        workers = self.point.concurrency or 0
        async with asyncio.TaskGroup() as group:
            for index in range(workers):
                start_s = index * self.point.ramp_up_s / workers
                group.create_task(self._worker(start_s), name=f"fmbench-worker-{index}")
        return self.attempts

    def shows_client_pace(self, attempt: Attempt) -> bool:
        """Not a worker's first request: that one waited for the load point's start-up, once.

        Its lag is recorded like any other, but the self-check's verdict is about keeping up with answers,
        and a start-up that was held up (in a local run, by another branch's set-up on the shared event
        loop) would otherwise mark a whole point client-bound by its first round alone.
        """
        return attempt.seq not in self._first_seqs

    def _claim(self, now_s: float) -> tuple[int, Phase, Prompt] | None:
        """The next sequence number, its phase and prompt, or None once the stop rule is met or the bin
        has no prompt left to give (no await)."""
        if self.prompts_exhausted is not None:
            return None
        phase = self._phases.classify(now_s - self._start_perf_s)
        if phase is None:
            return None
        seq = self._next_seq
        prompt = self._next_prompt(seq)
        if prompt is None:
            return None
        self._next_seq = seq + 1
        return seq, phase, prompt

    async def _worker(self, start_s: float) -> None:
        """One worker; with a ramp-up it starts ``start_s`` after the load point, and is due then."""
        if start_s > 0:
            await asyncio.sleep(start_s - (perf_counter() - self._start_perf_s))
        free_since_perf_s = self._start_perf_s + start_s
        first = True
        while True:
            claim = self._claim(perf_counter())
            if claim is None:
                return
            seq, phase, prompt = claim
            if first:
                self._first_seqs.add(seq)
                first = False
            result = (await self._send(seq, phase, free_since_perf_s, prompt)).result
            # A result without a plausible end (a client that never set it) must not read as huge lag.
            plausible = result.end_perf_s >= result.send_perf_s
            free_since_perf_s = result.end_perf_s if plausible else perf_counter()
