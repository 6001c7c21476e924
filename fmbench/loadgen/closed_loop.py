"""The closed-loop schedule: N workers, each keeping exactly one request in flight until the stop rule."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

from fmbench.config import InferenceParameters
from fmbench.endpoints.base import CLIENT_ERROR, EndpointClient, InvocationResult, shorten
from fmbench.loadgen.recording import Attempt
from fmbench.payloads import Prompt

logger = logging.getLogger(__name__)


class LoadPointError(ValueError):
    """A load point that cannot be run as described."""


@dataclass(frozen=True, slots=True)
class LoadPoint:
    """One step of a sweep: a concurrency level over the prompts of one bin, with its stop rule."""

    concurrency: int
    payload_bin: str
    prompts: Sequence[Prompt]
    params: InferenceParameters
    timeout_s: float
    warmup_requests: int = 0
    requests: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise LoadPointError("concurrency must be at least 1")
        if not self.prompts:
            raise LoadPointError(f"bin {self.payload_bin} has no prompts")
        if (self.requests is None) == (self.duration_s is None):
            raise LoadPointError("give exactly one of requests or duration_s")
        if self.warmup_requests < 0 or (self.requests is not None and self.requests < 1):
            raise LoadPointError("request counts must be positive")

    @property
    def load_mode(self) -> str:
        return "concurrency"

    @property
    def request_rate_per_s(self) -> float | None:
        return None

    @property
    def total_requests(self) -> int | None:
        """Warm-up plus measured requests; None when a duration decides."""
        return None if self.requests is None else self.warmup_requests + self.requests


class ClosedLoop:
    """Runs one load point; ``attempts`` holds every request that was started, finished or not.

    Workers are independent: a slow request holds up only its own worker, never a wave. Sequence
    numbers come from one shared counter that is read and advanced without an ``await`` in between, so
    the stop rule is exact without a lock. The hot path does no conversion and no token counting:
    records are built from ``attempts`` once the load point is over.
    """

    def __init__(
        self,
        client: EndpointClient,
        point: LoadPoint,
        *,
        on_request_done: Callable[[Attempt], None] | None = None,
    ) -> None:
        self.client = client
        self.point = point
        self.attempts: list[Attempt] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.window_start_perf_s: float | None = None
        self._next_seq = 0
        self._on_request_done = on_request_done

    async def run(self) -> list[Attempt]:
        async with asyncio.TaskGroup() as group:
            for index in range(self.point.concurrency):
                group.create_task(self._worker(), name=f"fmbench-worker-{index}")
        return self.attempts

    def _claim_seq(self, now_s: float) -> int | None:
        """The next sequence number, or None once the stop rule is met (no await: atomic in the loop)."""
        point = self.point
        seq = self._next_seq
        if seq >= point.warmup_requests:
            if point.requests is not None:
                if seq >= point.warmup_requests + point.requests:
                    return None
            elif self.window_start_perf_s is None:
                self.window_start_perf_s = now_s
            elif now_s - self.window_start_perf_s >= (point.duration_s or 0.0):
                return None
        self._next_seq = seq + 1
        return seq

    async def _worker(self) -> None:
        point = self.point
        prompts = point.prompts
        prompt_count = len(prompts)
        params = point.params
        timeout_s = point.timeout_s
        warmup_requests = point.warmup_requests
        invoke = self.client.invoke
        attempts = self.attempts
        on_done = self._on_request_done
        while True:
            scheduled_perf_s = perf_counter()
            seq = self._claim_seq(scheduled_perf_s)
            if seq is None:
                return
            prompt = prompts[seq % prompt_count]
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            try:
                result = await invoke(prompt.text, params, timeout_s)
            except asyncio.CancelledError:
                # The request was attempted, so it still becomes a record before the cancellation goes on.
                attempts.append(
                    Attempt(
                        seq,
                        seq < warmup_requests,
                        scheduled_perf_s,
                        prompt,
                        _failed(scheduled_perf_s, "cancelled"),
                    )
                )
                raise
            except Exception as exc:
                # A client must not raise for a failed request; if one does, the attempt is still counted.
                logger.exception("endpoint client raised instead of returning an error result")
                result = _failed(scheduled_perf_s, f"{type(exc).__name__}: {exc}")
            finally:
                self.in_flight -= 1
            attempt = Attempt(seq, seq < warmup_requests, scheduled_perf_s, prompt, result)
            attempts.append(attempt)
            if on_done is not None:
                on_done(attempt)


def _failed(send_perf_s: float, message: str) -> InvocationResult:
    return InvocationResult(
        send_perf_s=send_perf_s,
        end_perf_s=perf_counter(),
        status="error",
        error_class=CLIENT_ERROR,
        error_message=shorten(message),
    )
