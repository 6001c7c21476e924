"""The emulator's HTTP server: an OpenAI-compatible endpoint whose speed and price follow a profile."""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import enum
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fmbench.emulator.engine import BatchEngine, EngineClosedError, LoopClock, Sequence, fixed_token_times_s
from fmbench.emulator.profiles import DEFAULT_PROFILE, EmulatorProfile, get_profile
from fmbench.emulator.protocol import (
    DEFAULT_MAX_TOKENS,
    DONE_EVENT,
    MALFORMED_SSE_EVENT,
    ApiKind,
    InvalidRequestError,
    ParsedRequest,
    ResponseWriter,
    error_body,
    parse_request,
)

HANG_CAP_S = 600.0
RETRY_AFTER_S = 1
_HANG_POLL_S = 0.05
_SHUTDOWN_TIMEOUT_S = 5.0
_CLIENT_MAX_SIZE_BYTES = 16 * 1024 * 1024
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EmulatorSettings(BaseModel):
    """Everything that shapes one emulator: where it listens, how fast it is and how it fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    model: str = Field(default="emulated-model", min_length=1)
    profile: str | None = Field(default=None, description=f"Named profile; {DEFAULT_PROFILE} if unset.")
    ttft_ms: float | None = Field(default=None, ge=0)
    itl_ms: float | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=1)
    error_500_rate: float = Field(default=0.0, ge=0, le=1)
    error_429_rate: float = Field(default=0.0, ge=0, le=1)
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    cut_stream_rate: float = Field(default=0.0, ge=0, le=1)
    malformed_event_rate: float = Field(default=0.0, ge=0, le=1)
    sagemaker_format: Literal["lmi", "tgi", "vllm"] = Field(
        default="lmi",
        description="How SageMaker invocations with an {inputs, parameters} body are answered (LMI or TGI "
        "style); OpenAI chat bodies always get vLLM-style answers, and 'vllm' refuses any other body.",
    )
    seed: int = 0

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, name: str | None) -> str | None:
        if name is not None:
            get_profile(name)
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        fixed = (self.ttft_ms, self.itl_ms, self.output_tokens)
        if any(v is not None for v in fixed) and not all(v is not None for v in fixed):
            raise ValueError("fixed timing needs all of ttft_ms, itl_ms and output_tokens, or none of them")
        # One uniform draw per request picks at most one fault, so the rates share the unit interval.
        total = (
            self.error_500_rate
            + self.error_429_rate
            + self.hang_rate
            + self.cut_stream_rate
            + self.malformed_event_rate
        )
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total:g}; their sum must not exceed 1")
        return self

    @property
    def fixed_timing(self) -> bool:
        return self.ttft_ms is not None

    @property
    def resolved_profile(self) -> EmulatorProfile:
        return get_profile(self.profile or DEFAULT_PROFILE)


class _Fault(enum.Enum):
    NONE = "none"
    ERROR_500 = "error_500"
    ERROR_429 = "error_429"
    HANG = "hang"
    CUT_STREAM = "cut_stream"
    MALFORMED = "malformed"


class _ShutdownError(Exception):
    """The server is stopping while a response is under way."""


@dataclass
class _EmulatorState:
    settings: EmulatorSettings
    profile: EmulatorProfile
    engine: BatchEngine | None
    fault_rng: random.Random
    clock: LoopClock = field(default_factory=LoopClock)
    in_flight: int = 0
    peak_in_flight: int = 0
    requests_total: int = 0
    shutting_down: bool = False
    handler_tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Count one request in flight (and its peak) while its handler runs; shutdown cancels the handler."""
        self.requests_total += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        task = asyncio.current_task()
        if task is not None:
            self.handler_tasks.add(task)
        try:
            yield
        finally:
            self.in_flight -= 1
            if task is not None:
                self.handler_tasks.discard(task)

    def draw_fault(self) -> _Fault:
        s = self.settings
        if not (
            s.error_500_rate or s.error_429_rate or s.hang_rate or s.cut_stream_rate or s.malformed_event_rate
        ):
            return _Fault.NONE
        draw = self.fault_rng.random()
        for fault, rate in (
            (_Fault.ERROR_500, s.error_500_rate),
            (_Fault.ERROR_429, s.error_429_rate),
            (_Fault.HANG, s.hang_rate),
            (_Fault.CUT_STREAM, s.cut_stream_rate),
            (_Fault.MALFORMED, s.malformed_event_rate),
        ):
            if draw < rate:
                return fault
            draw -= rate
        return _Fault.NONE

    def output_plan(self, parsed: ParsedRequest) -> tuple[int, str]:
        """How many tokens to generate, and the finish_reason to report."""
        s = self.settings
        if s.output_tokens is not None:
            if parsed.max_tokens is None:
                return s.output_tokens, "stop"
            n_tokens = min(parsed.max_tokens, s.output_tokens)
            return n_tokens, "length" if n_tokens == parsed.max_tokens else "stop"
        return parsed.max_tokens or DEFAULT_MAX_TOKENS, "length"


STATE_KEY = web.AppKey("fmbench_emulator_state", _EmulatorState)


# ------------------------------------------------------------------------------------------ token feeds


class _TokenFeed(abc.ABC):
    """Tells a handler how many tokens exist so far, whichever timing mode produces them."""

    @abc.abstractmethod
    async def wait(self, seen_tokens: int) -> int:
        """Wait for token ``seen_tokens`` (0-based) and return how many tokens are available by now."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release whatever the request holds (called whether or not it completed)."""


class _FixedFeed(_TokenFeed):
    def __init__(self, state: _EmulatorState, start_s: float, n_tokens: int) -> None:
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


def _open_feed(state: _EmulatorState, parsed: ParsedRequest, start_s: float, n_tokens: int) -> _TokenFeed:
    if state.engine is None:
        return _FixedFeed(state, start_s, n_tokens)
    return _EngineFeed(state.engine, parsed.prompt_tokens, n_tokens)


# ------------------------------------------------------------------------------------------ handlers


def _json_error(
    status: int, message: str, error_type: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(message, error_type, code), status=status, headers=headers)


def _drop_connection(request: web.Request) -> None:
    """Close the socket without finishing the response, as a crashed or overloaded server would."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _hang(request: web.Request, state: _EmulatorState) -> web.StreamResponse:
    # Polling the transport (rather than relying on handler cancellation) ends the hang when the client
    # leaves however the application is run.
    deadline_s = state.clock.now_s() + HANG_CAP_S
    while not state.shutting_down and not _client_gone(request) and state.clock.now_s() < deadline_s:
        await asyncio.sleep(_HANG_POLL_S)
    _drop_connection(request)
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
    def error(self, fault: _Fault) -> web.Response:
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


Build = Callable[[bytes, _EmulatorState], Dialect]


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
        if fault in (_Fault.ERROR_500, _Fault.ERROR_429):
            return dialect.error(fault)
        if fault is _Fault.HANG:
            return await _hang(request, state)
        n_tokens, finish_reason = state.output_plan(dialect.parsed)
        try:
            feed = _open_feed(state, dialect.parsed, start_s, n_tokens)
        except _ShutdownError:
            return dialect.unavailable()

        def latency_ms() -> int:
            return round((state.clock.now_s() - start_s) * 1000)

        try:
            if dialect.streamed:
                return await _stream_frames(
                    request, dialect, feed, n_tokens, finish_reason, fault, latency_ms
                )
            return await _answer_once(request, dialect, feed, n_tokens, finish_reason, fault, latency_ms)
        finally:
            feed.close()


async def _stream_frames(
    request: web.Request,
    dialect: Dialect,
    feed: _TokenFeed,
    n_tokens: int,
    finish_reason: str,
    fault: _Fault,
    latency_ms: Callable[[], int],
) -> web.StreamResponse:
    response = web.StreamResponse(status=200, headers=dialect.stream_headers)
    await response.prepare(request)
    start = dialect.start_frames()
    if start:
        await response.write(start)
    cut = fault is _Fault.CUT_STREAM
    limit = max(1, n_tokens // 2) if cut else n_tokens
    malformed_at = max(1, n_tokens // 2) if fault is _Fault.MALFORMED else -1
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
        _drop_connection(request)
        return response
    if cut:
        _drop_connection(request)
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
    fault: _Fault,
    latency_ms: Callable[[], int],
) -> web.StreamResponse:
    try:
        if fault is _Fault.CUT_STREAM:
            await feed.wait(max(1, n_tokens // 2) - 1)
            _drop_connection(request)
            return web.Response(status=500)
        await feed.wait(n_tokens - 1)
    except _ShutdownError:
        _drop_connection(request)
        return dialect.unavailable()
    body, content_type = dialect.body(n_tokens, finish_reason, latency_ms())
    if fault is _Fault.MALFORMED:
        body = body[: max(1, len(body) // 2)]  # a 200 answer cut off half-way cannot be parsed
    return web.Response(body=body, headers={"Content-Type": content_type, **dialect.answer_headers})


class _OpenAIDialect(Dialect):
    """The OpenAI API: JSON errors, a completion object, or Server-Sent Events ending in ``[DONE]``."""

    def __init__(self, parsed: ParsedRequest, model: str) -> None:
        self.parsed = parsed
        self.streamed = parsed.stream
        self.stream_headers = _SSE_HEADERS
        self.answer_headers = {}
        self.writer = ResponseWriter(parsed, parsed.model or model)

    def error(self, fault: _Fault) -> web.Response:
        if fault is _Fault.ERROR_429:
            return _json_error(
                429,
                "emulated rate limit: too many requests, retry later",
                "rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return _json_error(500, "emulated internal server error", "server_error")

    def unavailable(self) -> web.Response:
        return _json_error(503, "the emulator is shutting down", "server_error")

    def body(self, n_tokens: int, finish_reason: str, latency_ms: int) -> tuple[bytes, str]:
        return json.dumps(self.writer.full_response(n_tokens, finish_reason)).encode(), "application/json"

    def token_frames(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        token_chunk = self.writer.token_chunk
        if stop == start + 1:  # the hot path: one token due at a time
            return token_chunk(start)
        return b"".join([token_chunk(i) for i in range(start, stop)])

    def end_frames(self, n_tokens: int, finish_reason: str, latency_ms: int) -> bytes:
        tail = [self.writer.finish_chunk(finish_reason)]
        if self.parsed.include_usage:
            tail.append(self.writer.usage_chunk(n_tokens))
        tail.append(DONE_EVENT)
        return b"".join(tail)

    def malformed_frame(self) -> bytes:
        return MALFORMED_SSE_EVENT


def _openai_builder(kind: ApiKind) -> Build:
    def build(raw: bytes, state: _EmulatorState) -> Dialect:
        try:
            return _OpenAIDialect(parse_request(kind, raw), state.settings.model)
        except InvalidRequestError as exc:
            raise RejectedRequestError(_json_error(400, str(exc), "invalid_request_error")) from None

    return build


_build_chat = _openai_builder("chat")
_build_completion = _openai_builder("completions")


def _arrival_s(request: web.Request, state: _EmulatorState) -> float:
    """When the request had arrived: the emulator's time zero for its answer.

    That is the last read of the request's bytes off its connection (with its body read in full), not when
    its handler started: between the two the loop may serve other connections, which a server with a known
    TTFT must not add to it. Falls back to now where reads are not stamped (another runner, a test clock).
    """
    now_s = state.clock.now_s()
    protocol = request.protocol
    if isinstance(protocol, _ReadStampingHandler) and isinstance(state.clock, LoopClock):
        read_s = protocol.last_read_s
        if read_s is not None and read_s <= now_s:
            return read_s
    return now_s


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, _build_chat)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, _build_completion)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    model = {"id": state.settings.model, "object": "model", "created": 0, "owned_by": "fmbench-emulator"}
    return web.json_response({"object": "list", "data": [model]})


def health_body(state: _EmulatorState) -> dict[str, Any]:
    s = state.settings
    p = state.profile
    body: dict[str, Any] = {
        "status": "ok",
        "model": s.model,
        "mode": "fixed" if s.fixed_timing else "batched",
        "profile": p.name,
        "instance_type": p.instance_type,
        "price_per_hour_usd": p.price_per_hour_usd,
        "max_batch": p.max_batch,
        "in_flight": state.in_flight,
        "peak_in_flight": state.peak_in_flight,
        "requests_total": state.requests_total,
    }
    if state.engine is not None:
        body["running"] = state.engine.running_count
        body["waiting"] = state.engine.waiting_count
    else:
        body.update(ttft_ms=s.ttft_ms, itl_ms=s.itl_ms, output_tokens=s.output_tokens)
    return body


async def _health(request: web.Request) -> web.Response:
    return web.json_response(health_body(request.app[STATE_KEY]))


# ------------------------------------------------------------------------------------------ app


def build_app(settings: EmulatorSettings, *, profile: EmulatorProfile | None = None) -> web.Application:
    """The emulator as an aiohttp application.

    ``profile`` replaces the named profile (tests use it for custom constants such as zero jitter). Run the
    application with ``handler_cancellation=True`` (as ``running_emulator`` and the CLI do) so that a client
    that disconnects while waiting for a non-streaming answer frees its batch slot at once.
    """
    resolved = profile or settings.resolved_profile
    clock = LoopClock()
    engine = None if settings.fixed_timing else BatchEngine(resolved, seed=settings.seed, clock=clock)
    state = _EmulatorState(
        settings=settings,
        profile=resolved,
        engine=engine,
        fault_rng=random.Random(settings.seed),
        clock=clock,
    )
    app = web.Application(client_max_size=_CLIENT_MAX_SIZE_BYTES)
    app[STATE_KEY] = state

    async def engine_lifetime(_app: web.Application) -> AsyncIterator[None]:
        if engine is not None:
            engine.start()
        yield
        if engine is not None:
            await engine.stop()
        state.clock.close()

    async def on_shutdown(_app: web.Application) -> None:
        # Without this, aiohttp would wait for every streaming response (and every hang) to finish.
        state.shutting_down = True
        if engine is not None:
            engine.abort_all()
        for task in list(state.handler_tasks):
            task.cancel()

    app.cleanup_ctx.append(engine_lifetime)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/ping", _health)
    from fmbench.emulator.aws_routes import add_aws_routes  # here: aws_routes builds on this module

    add_aws_routes(app)
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _ReadStampingHandler(web.RequestHandler):
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


class _ReadStampingServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _ReadStampingHandler(self, loop=self._loop, **self._kwargs)


class EmulatorAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections stamp their reads, so answers are timed from arrival."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside AppRunner; only the protocol factory differs, so the class is
        # swapped rather than the construction copied. Tests check that reads are stamped.
        server.__class__ = _ReadStampingServer
        return server


@contextlib.asynccontextmanager
async def running_emulator(
    settings: EmulatorSettings, *, profile: EmulatorProfile | None = None
) -> AsyncIterator[str]:
    """Serve the emulator in this event loop; yields its base URL, e.g. ``http://127.0.0.1:PORT``."""
    runner = EmulatorAppRunner(
        build_app(settings, profile=profile),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{_url_host(host)}:{port}"
    finally:
        await runner.cleanup()
