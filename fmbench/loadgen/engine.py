"""What every schedule shares: sending one request, guarding its timeout, keeping it as an attempt."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import perf_counter

from fmbench.endpoints.base import CLIENT_ERROR, TIMEOUT, EndpointClient, InvocationResult, shorten
from fmbench.loadgen.points import LoadPoint, Phase
from fmbench.loadgen.recording import Attempt
from fmbench.payloads import Prompt, PromptsExhaustedError

logger = logging.getLogger(__name__)

# A client enforces request_timeout_s itself; the engine's own bound, this much later, catches a client
# that does not, so that no request outlives its timeout and a load point always ends.
TIMEOUT_GRACE_S = 1.0


class LoadEngine:
    """Base of the schedules: ``attempts`` holds every request started and not yet taken by a writer.

    The hot path does no conversion and no token counting: records are built from the attempts later,
    in parts, by whoever calls ``take_attempts``.
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
        self._on_request_done = on_request_done
        # Why the load point stopped early: its bin ran out of distinct prompts under ``repeat: error``.
        self.prompts_exhausted: str | None = None

    async def run(self) -> list[Attempt]:
        raise NotImplementedError

    def shows_client_pace(self, attempt: Attempt) -> bool:
        """Whether the attempt's schedule lag says if the client keeps up (what the self-check judges)."""
        return True

    def take_attempts(self) -> list[Attempt]:
        """The attempts kept since the last call; the engine forgets them, so memory stays bounded."""
        taken, self.attempts = self.attempts, []
        return taken

    def _next_prompt(self, seq: int) -> Prompt | None:
        """The prompt of request ``seq`` (O(1), no await), or None once the bin has none left to give.

        Called where a schedule claims the request, so that a refused prompt stops the load point before
        anything is sent, like its stop rule does.
        """
        point = self.point
        deck = point.deck
        if deck is None:
            return point.prompts[seq % len(point.prompts)]
        if self.prompts_exhausted is not None:
            return None
        try:
            return deck.draw()
        except PromptsExhaustedError as exc:
            self.prompts_exhausted = str(exc)
            return None

    async def _send(self, seq: int, phase: Phase, scheduled_perf_s: float, prompt: Prompt) -> Attempt:
        """One request; it becomes an attempt whatever happens, cancellation included."""
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        started_perf_s = perf_counter()
        try:
            result = await self._invoke(prompt, started_perf_s)
        except asyncio.CancelledError:
            # The request was attempted, so it still becomes a record before the cancellation goes on.
            cancelled = failed_result(started_perf_s, "cancelled")
            self._keep(Attempt(seq, phase, scheduled_perf_s, prompt, cancelled))
            raise
        except Exception as exc:
            # A client must not raise for a failed request; if one does, the attempt is still counted.
            logger.exception("endpoint client raised instead of returning an error result")
            result = failed_result(started_perf_s, f"{type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
        attempt = Attempt(seq, phase, scheduled_perf_s, prompt, result)
        self._keep(attempt)
        return attempt

    async def _invoke(self, prompt: Prompt, started_perf_s: float) -> InvocationResult:
        timeout_s = self.point.timeout_s
        guard = asyncio.timeout(timeout_s + TIMEOUT_GRACE_S)
        try:
            async with guard:
                if prompt.system_prompt is None and prompt.messages is None:
                    return await self.client.invoke(prompt.text, self.point.params, timeout_s)
                # a chat API sends the system prompt and the conversation; others send the text
                messages = prompt.chat_messages()
                return await self.client.invoke(prompt.text, self.point.params, timeout_s, messages=messages)
        except TimeoutError:
            if not guard.expired():
                raise
            return failed_result(
                started_perf_s,
                f"the endpoint client did not return within the request timeout ({timeout_s:g} s) "
                f"plus {TIMEOUT_GRACE_S:g} s",
                TIMEOUT,
            )

    def _keep(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self._on_request_done is not None:
            self._on_request_done(attempt)


def failed_result(send_perf_s: float, message: str, error_class: str = CLIENT_ERROR) -> InvocationResult:
    return InvocationResult(
        send_perf_s=send_perf_s,
        end_perf_s=perf_counter(),
        status="error",
        error_class=error_class,
        error_message=shorten(message),
    )
