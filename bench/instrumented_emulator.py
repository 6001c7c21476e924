"""Timestamps on both sides of loopback, so a client's timing error can be split by where it arises.

The emulator schedules a fixed-timing answer from the moment its handler starts (``start_s``); a client's
TTFT runs from before it sends. Their difference is the send path, the emulator's own lateness and the
return path. This module serves the unchanged application of ``fmbench.emulator.server.build_app`` with a
middleware that notes when each generation handler started and when each body write was issued, on
``time.perf_counter`` (CLOCK_MONOTONIC on Linux, the clock the event loop and the client also read, so
the readings of the two processes are on one time scale). ``GET /bench/timings`` hands them over, keyed by
the request's prompt text, and forgets them.

It runs as a child process (``InstrumentedEmulatorProcess``) with the emulator's own command line.
Bench-only code: it patches ``StreamResponse.write`` in its own process, which the product never does.

On the client side, ``HeaderStampingClient`` is ``OpenAIClient`` plus an aiohttp trace hook that notes
when each request's headers were handed to the socket, which splits the send path into the client's own
request preparation and what follows (loopback, the emulator's intake of requests that arrive together).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from time import perf_counter
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from fmbench.config import InferenceParameters
from fmbench.emulator.cli import READY_PREFIX, build_parser, settings_from_args, settings_to_argv
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.server import EmulatorSettings, build_app
from fmbench.endpoints.base import InvocationResult
from fmbench.endpoints.openai import OpenAIClient

TIMINGS_PATH = "/bench/timings"
_GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_SHUTDOWN_TIMEOUT_S = 5.0

# The write times of the response being produced by the current handler task (None outside a handler).
_WRITES_S: ContextVar[list[float] | None] = ContextVar("bench_writes_s", default=None)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _patch_stream_writes() -> None:
    """Stamp every body write with the time it was issued (before the bytes go to the transport)."""
    original_write = web.StreamResponse.write

    async def timed_write(self: web.StreamResponse, data: Any) -> None:
        writes_s = _WRITES_S.get()
        if writes_s is not None:
            writes_s.append(perf_counter())
        await original_write(self, data)

    web.StreamResponse.write = timed_write  # type: ignore[method-assign]


def _prompt_key(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
        messages = parsed.get("messages")
        if messages:
            return str(messages[-1].get("content"))
        return str(parsed.get("prompt"))
    except (ValueError, AttributeError, TypeError):
        return None


def instrument(app: web.Application, timings: dict[str, list[Any]]) -> None:
    """Add the timing middleware and the endpoint that hands the timings over."""

    @web.middleware
    async def record_timings(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in _GENERATION_PATHS:
            return await handler(request)
        received_s = perf_counter()
        writes_s: list[float] = []
        token = _WRITES_S.set(writes_s)
        try:
            response = await handler(request)
        finally:
            _WRITES_S.reset(token)
        key = _prompt_key(await request.read())  # read by the handler already: aiohttp returns its copy
        if key is not None:
            timings[key] = [received_s, writes_s]
        return response

    async def hand_over(_request: web.Request) -> web.Response:
        body = json.dumps(timings)
        timings.clear()
        return web.Response(body=body, content_type="application/json")

    app.middlewares.append(record_timings)
    app.router.add_get(TIMINGS_PATH, hand_over)


async def serve(settings: EmulatorSettings) -> None:
    _patch_stream_writes()
    timings: dict[str, list[Any]] = {}
    app = build_app(settings)
    instrument(app, timings)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"{READY_PREFIX} http://{host}:{port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser(prog="bench/instrumented_emulator.py").parse_args(argv)
    asyncio.run(serve(settings_from_args(args)))
    return 0


# ------------------------------------------------------------------------------------------- parent side


class InstrumentedEmulatorProcess(EmulatorProcess):
    """``EmulatorProcess`` running this module instead of ``python -m fmbench.emulator``."""

    @property
    def argv(self) -> list[str]:
        # By path, so the child needs only fmbench on its import path, not the bench package.
        return [sys.executable, str(Path(__file__).resolve()), *settings_to_argv(self.settings)]


async def fetch_server_timings(base_url: str) -> dict[str, tuple[float, list[float]]]:
    """Prompt text -> (handler start, [write times]) of the requests served since the last fetch."""
    async with aiohttp.ClientSession() as session, session.get(base_url + TIMINGS_PATH) as response:
        response.raise_for_status()
        raw = await response.json()
    return {key: (float(value[0]), [float(t) for t in value[1]]) for key, value in raw.items()}


# The prompt text of the request the current task is sending (the key of the header stamps).
_SENDING_PROMPT: ContextVar[str | None] = ContextVar("bench_sending_prompt", default=None)


class HeaderStampingClient(OpenAIClient):
    """``OpenAIClient`` that also notes, per prompt text, when the request's headers reached the socket.

    Costs one trace callback and one context variable per request; ``timing_accuracy --stock-emulator``
    runs the plain client, for comparison.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers_sent_s: dict[str, float] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            stamps = self.headers_sent_s

            async def on_headers_sent(
                _session: aiohttp.ClientSession, _ctx: SimpleNamespace, _params: Any
            ) -> None:
                prompt_text = _SENDING_PROMPT.get()
                if prompt_text is not None:
                    stamps[prompt_text] = perf_counter()

            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(on_headers_sent)
            # As OpenAIClient builds its session, plus the trace hook.
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
            timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[trace])
        return self._session

    async def invoke(
        self, prompt_text: str, params: InferenceParameters, timeout_s: float
    ) -> InvocationResult:
        _SENDING_PROMPT.set(prompt_text)  # the engine sends each request from a task with no other in flight
        return await super().invoke(prompt_text, params, timeout_s)


if __name__ == "__main__":
    sys.exit(main())
