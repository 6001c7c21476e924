"""An endpoint client with no endpoint behind it, for the load generator's tests (closed and open loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

from fmbench.config import InferenceParameters
from fmbench.endpoints.base import HTTP_5XX, InvocationResult

GAPS_S = (0.001, 0.002, 0.003)  # the fake's chunk gaps after its first chunk


@dataclass
class FakeClient:
    """Answers after ``delay_s`` (per-call overrides by call index), with chunks at known offsets.

    It can also burn CPU, stall the event loop, fail, raise or ignore its timeout on chosen calls, so that
    the engines' accounting of each of these is tested without a server's timing in the way.
    """

    delay_s: float = 0.005
    delays_s: dict[int, float] = field(default_factory=dict)
    busy_s: float = 0.0  # CPU burnt synchronously per call, as a slow client would
    stall_calls: dict[int, float] = field(default_factory=dict)  # call -> seconds the loop is blocked
    failing_calls: set[int] = field(default_factory=set)
    raising_calls: set[int] = field(default_factory=set)
    hanging_calls: set[int] = field(default_factory=set)  # never return, whatever the timeout
    usage: tuple[int | None, int | None] | None = (11, 4)
    text: str = " one two three four"
    in_flight: int = 0
    max_in_flight: int = 0
    prompts_seen: list[str] = field(default_factory=list)
    sends_perf_s: list[float] = field(default_factory=list)
    ends_perf_s: dict[int, float] = field(default_factory=dict)

    async def invoke(
        self,
        prompt_text: str,
        params: InferenceParameters,
        timeout_s: float,
        *,
        messages: list[dict[str, str]] | None = None,
    ) -> InvocationResult:
        call = len(self.prompts_seen)
        self.prompts_seen.append(prompt_text)
        send_perf_s = perf_counter()
        self.sends_perf_s.append(send_perf_s)
        if call in self.stall_calls:
            time.sleep(self.stall_calls[call])  # blocks the whole event loop, like a GC pause or a busy CPU
        if self.busy_s:
            deadline_s = perf_counter() + self.busy_s
            while perf_counter() < deadline_s:
                pass
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if call in self.hanging_calls:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.delays_s.get(call, self.delay_s))
            if call in self.raising_calls:
                raise RuntimeError("bug in a client")
        finally:
            self.in_flight -= 1
        end_perf_s = perf_counter()
        self.ends_perf_s[call] = end_perf_s
        if call in self.failing_calls:
            return InvocationResult(
                send_perf_s=send_perf_s,
                end_perf_s=end_perf_s,
                status="error",
                error_class=HTTP_5XX,
                http_status=500,
                error_message="HTTP 500: boom",
            )
        first_perf_s = send_perf_s + 0.001
        chunks = [first_perf_s]
        for gap_s in GAPS_S:
            chunks.append(chunks[-1] + gap_s)
        prompt_tokens, completion_tokens = self.usage or (None, None)
        return InvocationResult(
            send_perf_s=send_perf_s,
            first_token_perf_s=first_perf_s,
            end_perf_s=end_perf_s,
            chunk_perf_s=chunks,
            text=self.text,
            usage_prompt_tokens=prompt_tokens,
            usage_completion_tokens=completion_tokens,
            http_status=200,
        )

    async def probe(self, timeout_s: float) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds: a busy machine only makes this slower, never wrong."""
    deadline_s = perf_counter() + timeout_s
    while not condition():
        if perf_counter() > deadline_s:
            raise AssertionError(f"waited {timeout_s:g} s for {what}")
        await asyncio.sleep(0.005)
