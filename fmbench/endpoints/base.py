"""The protocol-neutral result of one model invocation and the interface every endpoint client meets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Literal, Protocol

from fmbench.config import InferenceParameters

# Error classes: one vocabulary for every wire protocol, so reports can compare platforms.
HTTP_429 = "http_429"
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
STREAM_CUT = "stream_cut"
MALFORMED_RESPONSE = "malformed_response"
CLIENT_ERROR = "client_error"
ERROR_CLASSES = (
    HTTP_429,
    HTTP_4XX,
    HTTP_5XX,
    TIMEOUT,
    CONNECTION_ERROR,
    STREAM_CUT,
    MALFORMED_RESPONSE,
    CLIENT_ERROR,
)

ERROR_MESSAGE_MAX_CHARS = 200


@dataclass(slots=True)
class InvocationResult:
    """Raw perf_counter readings of one request; the load engine turns them into a record.

    Times stay on the perf_counter scale here (not epoch) so that the client never pays for a clock
    conversion on its hot path and every difference is taken on one monotonic clock.
    """

    send_perf_s: float
    first_token_perf_s: float | None = None
    end_perf_s: float = 0.0
    chunk_perf_s: list[float] = field(default_factory=list)
    text: str = ""
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    status: Literal["ok", "error"] = "ok"
    error_class: str | None = None
    http_status: int | None = None
    error_message: str | None = None
    # Reasoning models: the first answer (not reasoning) token's arrival, the reasoning text, and the
    # server's count of reasoning tokens (usage.completion_tokens_details.reasoning_tokens) when it sent one.
    first_answer_perf_s: float | None = None
    reasoning_text: str = ""
    usage_reasoning_tokens: int | None = None

    def settle(self, pieces: list[str], *, streamed: bool, reasoning_pieces: list[str] | None = None) -> None:
        """Complete the result once the request is over, whatever happened: its end time if none was
        set, its text from the pieces that arrived, and (streamed) its first token's time: the first
        chunk of any kind, reasoning included (``chunk_perf_s`` holds both)."""
        if not self.end_perf_s:
            self.end_perf_s = perf_counter()
        if pieces:
            self.text = "".join(pieces)
        if reasoning_pieces:
            self.reasoning_text = "".join(reasoning_pieces)
        if streamed and self.chunk_perf_s:
            self.first_token_perf_s = self.chunk_perf_s[0]
            if pieces and not reasoning_pieces and self.first_answer_perf_s is None:
                # a client that has no reasoning to tell apart: its first token is the answer's
                self.first_answer_perf_s = self.first_token_perf_s

    def fail(self, error_class: str, message: str, http_status: int | None = None) -> None:
        """Mark the request failed; the first failure wins so a cascade cannot hide the cause."""
        if self.status == "error":
            return
        self.status = "error"
        self.error_class = error_class
        self.error_message = shorten(message)
        if http_status is not None:
            self.http_status = http_status


def shorten(message: str, limit: int = ERROR_MESSAGE_MAX_CHARS) -> str:
    """Error messages end up in Parquet rows and reports: keep them to one short line."""
    one_line = " ".join(message.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 3] + "..."


# The result of the request the current task is sending: where a client's transport hook notes the moment
# the request leaves for the endpoint. Set around one request by ``sending``; hooks call ``mark_sent``.
_SENDING: ContextVar[InvocationResult | None] = ContextVar("fmbench_sending", default=None)


@contextlib.contextmanager
def sending(result: InvocationResult) -> Iterator[InvocationResult]:
    """While the current task sends the request of ``result``, let ``mark_sent`` stamp its send time.

    A request is *sent* when it leaves the client: a stamp taken when the client is called would count the
    client's own preparation (building, signing, waiting for a connection or for the event loop) into the
    endpoint's TTFT and latency. Until a hook fires, the send time stays the one ``result`` was made with.
    """
    token = _SENDING.set(result)
    try:
        yield result
    finally:
        _SENDING.reset(token)


def mark_sent() -> None:
    """Stamp the send time of the request the current task is sending (no-op outside ``sending``)."""
    result = _SENDING.get()
    if result is not None:
        result.send_perf_s = perf_counter()


class EndpointClient(Protocol):
    """One wire protocol. ``invoke`` never raises for a failed request: it returns an error result.

    Only cancellation propagates, so that the load engine can count every attempt as a record.
    """

    async def invoke(
        self,
        prompt_text: str,
        params: InferenceParameters,
        timeout_s: float,
        *,
        messages: list[dict[str, str]] | None = None,
    ) -> InvocationResult:
        """``messages`` (a system prompt, a conversation) replaces ``prompt_text`` where the API is a chat."""
        ...

    async def probe(self, timeout_s: float) -> str | None:
        """None when the endpoint answers at all, else a human-readable reason."""
        ...

    async def open_connections(self, count: int, timeout_s: float) -> None:
        """Have ``count`` connections open and idle in the pool, as far as the protocol allows.

        Called before a closed-loop load point, so that its first requests are not sent late by setting
        up connections (a new connection cost 5 ms and more on a busy two-core machine). Never raises.
        """
        ...

    async def aclose(self) -> None: ...
