"""One generation request from its arrival to its last frame, the same for every API the emulator speaks.

Each API (``openai_routes``, ``aws_routes``) brings a :class:`Dialect` (its error shapes, bodies and
frames); :func:`serve` owns what they share: the arrival stamp that times the answer, the fault draw, the
token schedule (fixed timing or the batching engine) and the order of what is sent.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fmbench.emulator.engine import BatchEngine, EngineClosedError, LoopClock, Sequence, fixed_token_times_s
from fmbench.emulator.protocol import ParsedRequest
from fmbench.emulator.state import STATE_KEY, EmulatorState, Fault

HANG_CAP_S = 600.0
_HANG_POLL_S = 0.05


class _ShutdownError(Exception):
    """The server is stopping while a response is under way."""


# ------------------------------------------------------------------------------------------ token feeds


class _TokenFeed(abc.ABC):
    """Tells a handler how many tokens exist so far, whichever timing mode produces them."""

    @abc.abstractmethod
    async def wait(self, seen_tokens: int) -> int:
        """Wait for token ``seen_tokens`` (0-based) and return how many tokens are available by now."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release whatever the request holds (called whether or not it completed)."""

    @abc.abstractmethod
    def produced(self) -> tuple[int, float | None]:
        """Tokens generated so far for this request, and when the first was (None before it)."""


class _FixedFeed(_TokenFeed):
    def __init__(self, state: EmulatorState, start_s: float, n_tokens: int) -> None:
        s = state.settings
        assert s.ttft_ms is not None and s.itl_ms is not None
        self._clock = state.clock
        self._times_s = fixed_token_times_s(start_s, s.ttft_ms, s.itl_ms, n_tokens)

    async def wait(self, seen_tokens: int) -> int:
        # The first token's wait is exact: TTFT is judged per request. A later token's lateness only moves
        # one gap against the next (the schedule is absolute), and exact waits cost CPU at high concurrency.
        await self._clock.sleep_until(self._times_s[seen_tokens], exact=seen_tokens == 0)
        # A handler that fell behind sends every token that is already due, so the schedule stays absolute.
        return max(seen_tokens + 1, bisect.bisect_right(self._times_s, self._clock.now_s()))

    def close(self) -> None:
        pass  # each fixed-timing request is independent: nothing to release

    def produced(self) -> tuple[int, float | None]:
        due = bisect.bisect_right(self._times_s, self._clock.now_s())
        return due, (self._times_s[0] if due else None)


class _EngineFeed(_TokenFeed):
    def __init__(self, engine: BatchEngine, prompt_tokens: int, n_tokens: int) -> None:
        self._engine = engine
        try:
            self._seq: Sequence = engine.submit(prompt_tokens, n_tokens)
        except EngineClosedError:
            raise _ShutdownError from None

    async def wait(self, seen_tokens: int) -> int:
        available = await self._seq.wait_for_tokens(seen_tokens)
        if available <= seen_tokens:
            raise _ShutdownError
        return available

    def close(self) -> None:
        self._engine.cancel(self._seq)

    def produced(self) -> tuple[int, float | None]:
        times = self._seq.token_times_s
        return len(times), (times[0] if times else None)


def _open_feed(state: EmulatorState, parsed: ParsedRequest, start_s: float, n_tokens: int) -> _TokenFeed:
    if state.engine is None:
        return _FixedFeed(state, start_s, n_tokens)
    return _EngineFeed(state.engine, parsed.prompt_tokens, n_tokens)


# ------------------------------------------------------------------------------------------ answering


def drop_connection(request: web.Request) -> None:
    """Close the socket without finishing the response, as a crashed or overloaded server would."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _hang(request: web.Request, state: EmulatorState) -> web.StreamResponse:
    # Polling the transport (rather than relying on handler cancellation) ends the hang when the client
    # leaves however the application is run.
    deadline_s = state.clock.now_s() + HANG_CAP_S
    while not state.shutting_down and not _client_gone(request) and state.clock.now_s() < deadline_s:
        await asyncio.sleep(_HANG_POLL_S)
    drop_connection(request)
    return web.Response(status=504)


class Dialect(abc.ABC):
    """One API's ways of answering a generation: its error shapes, a whole body, or stream frames.

    The OpenAI API speaks Server-Sent Events; the AWS runtimes (``aws_routes``) event-stream frames. Timing,
    faults and the order of what is sent are :func:`serve`'s, the same for every API.
    """

    parsed: ParsedRequest
    streamed: bool  # answer in frames as tokens come (else one body once the last token is due)
    stream_headers: dict[str, str]
    answer_headers: dict[str, str]

    @abc.abstractmethod
    def error(self, fault: Fault) -> web.Response:
        """The answer to an error_500 or error_429 fault."""

    @abc.abstractmethod
    def unavailable(self) -> web.Response:
        """The answer while the emulator shuts down."""

    @abc.abstractmethod
    def body(self, n_tokens: int, finish_reason: str, latency_ms: int) -> tuple[bytes, str]:
        """A non-streamed answer and its content type."""

    def start_frames(self) -> bytes:
        return b""

    @abc.abstractmethod
    def token_frames(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        """The frames of tokens ``start`` to ``stop`` (b"" for none)."""

    @abc.abstractmethod
    def end_frames(self, n_tokens: int, finish_reason: str, latency_ms: int) -> bytes: ...

    @abc.abstractmethod
    def malformed_frame(self) -> bytes:
        """One frame a client cannot parse, sent half-way by the malformed fault."""


class RejectedRequestError(Exception):
    """A request the emulated service refuses; carries the error response to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.reason)
        self.response = response


Build = Callable[[bytes, EmulatorState], Dialect]


async def serve(request: web.Request, build: Build) -> web.StreamResponse:
    """Answer one generation request in the dialect ``build`` makes of its body (or the refusal it raises).

    Timed from the request's arrival; draws the request's fault; streams frames as the tokens come due, or
    answers once when the last is due.
    """
    state = request.app[STATE_KEY]
    try:
        body = await request.read()
        start_s = _arrival_s(request, state)
        dialect = build(body, state)
    except RejectedRequestError as exc:
        return exc.response
    with state.serving():
        fault = state.draw_fault()
        if fault in (Fault.ERROR_500, Fault.ERROR_429):
            return dialect.error(fault)
        if fault is Fault.HANG:
            return await _hang(request, state)
        n_tokens, finish_reason = state.output_plan(dialect.parsed)
        try:
            feed = _open_feed(state, dialect.parsed, start_s, n_tokens)
        except _ShutdownError:
            return dialect.unavailable()
        in_engine = 1 if isinstance(feed, _EngineFeed) else 0
        state.in_engine += in_engine

        def latency_ms() -> int:
            return round((state.clock.now_s() - start_s) * 1000)

        answered = False
        try:
            if dialect.streamed:
                response = await _stream_frames(
                    request, dialect, feed, n_tokens, finish_reason, fault, latency_ms
                )
            else:
                response = await _answer_once(
                    request, dialect, feed, n_tokens, finish_reason, fault, latency_ms
                )
            answered = fault is Fault.NONE and not state.shutting_down
            return response
        finally:
            feed.close()
            state.in_engine -= in_engine
            generated, first_s = feed.produced()
            state.request_ended(
                prompt_tokens=dialect.parsed.prompt_tokens,
                generated=generated,
                ttft_s=None if first_s is None else first_s - start_s,
                succeeded=finish_reason if answered and generated >= n_tokens else None,
                latency_s=state.clock.now_s() - start_s,
            )


async def _stream_frames(
    request: web.Request,
    dialect: Dialect,
    feed: _TokenFeed,
    n_tokens: int,
    finish_reason: str,
    fault: Fault,
    latency_ms: Callable[[], int],
) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=dialect.stream_headers)
    await response.prepare(request)
    start = dialect.start_frames()
    if start:
        await response.write(start)
    cut = fault is Fault.CUT_STREAM
    limit = max(1, n_tokens // 2) if cut else n_tokens
    malformed_at = max(1, n_tokens // 2) if fault is Fault.MALFORMED else -1
    sent = 0
    try:
        while sent < limit:
            available = min(await feed.wait(sent), limit)
            if sent <= malformed_at < available:
                frames = b"".join(
                    (
                        dialect.token_frames(sent, malformed_at, n_tokens, finish_reason),
                        dialect.malformed_frame(),
                        dialect.token_frames(malformed_at, available, n_tokens, finish_reason),
                    )
                )
            else:
                frames = dialect.token_frames(sent, available, n_tokens, finish_reason)
            if frames:
                await response.write(frames)
            sent = available
    except _ShutdownError:
        drop_connection(request)
        return response
    if cut:
        drop_connection(request)
        return response
    await response.write(dialect.end_frames(n_tokens, finish_reason, latency_ms()))
    await response.write_eof()
    return response


async def _answer_once(
    request: web.Request,
    dialect: Dialect,
    feed: _TokenFeed,
    n_tokens: int,
    finish_reason: str,
    fault: Fault,
    latency_ms: Callable[[], int],
) -> web.StreamResponse:
    try:
        if fault is Fault.CUT_STREAM:
            await feed.wait(max(1, n_tokens // 2) - 1)
            drop_connection(request)
            return web.Response(status=500)
        await feed.wait(n_tokens - 1)
    except _ShutdownError:
        drop_connection(request)
        return dialect.unavailable()
    body, content_type = dialect.body(n_tokens, finish_reason, latency_ms())
    if fault is Fault.MALFORMED:
        body = body[: max(1, len(body) // 2)]  # a 200 answer cut off half-way cannot be parsed
    return web.Response(body=body, headers={"Content-Type": content_type, **dialect.answer_headers})


def _arrival_s(request: web.Request, state: EmulatorState) -> float:
    """When the request had arrived: the emulator's time zero for its answer.

    That is the last read of the request's bytes off its connection (with its body read in full), not when
    its handler started: between the two the loop may serve other connections, which a server with a known
    TTFT must not add to it. Falls back to now where reads are not stamped (another runner, a test clock).
    """
    now_s = state.clock.now_s()
    protocol = request.protocol
    if isinstance(protocol, ReadStampingHandler) and isinstance(state.clock, LoopClock):
        read_s = protocol.last_read_s
        if read_s is not None and read_s <= now_s:
            return read_s
    return now_s


class ReadStampingHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, noting when the loop last read bytes off the connection.

    HTTP/1.1 clients send a request only once the previous answer on the connection is complete, so the
    last read before a handler has read its body is when that request arrived.
    """

    __slots__ = ("last_read_s",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_read_s: float | None = None

    def data_received(self, data: bytes) -> None:
        self.last_read_s = asyncio.get_running_loop().time()
        super().data_received(data)
