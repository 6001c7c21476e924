"""Timestamps on both sides of loopback, so a client's timing error can be split by where it arises.

The emulator schedules a fixed-timing answer from the moment its handler starts (``start_s``); a client's
TTFT runs from before it sends. Their difference is the send path, the emulator's own lateness and the
return path. This module serves the unchanged application of ``fmbench.emulator.server.build_app`` with a
middleware that notes when each generation handler started and when each body write was issued, on
``time.perf_counter`` (CLOCK_MONOTONIC on Linux, the clock the event loop and the client also read, so
the readings of the two processes are on one time scale). ``GET /bench/timings`` hands them over, keyed by
the request's prompt text, and forgets them.

It runs as a child process (``InstrumentedEmulatorProcess``) with the emulator's own command line (the
settings as one JSON document, as ``EmulatorProcess`` hands them over).
Bench-only code: it patches ``StreamResponse.write`` in its own process, which the product never does.

On the client side, ``CallStampingClient`` is ``OpenAIClient`` noting when each ``invoke`` began, so the
client's request preparation (before its send stamp, which is when the bytes go to the connection) can be
shown apart from what follows (loopback, the emulator's intake of requests that arrive together).
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
from typing import Any

import aiohttp
from aiohttp import web

from fmbench.config import InferenceParameters
from fmbench.emulator.cli import READY_PREFIX, build_parser, settings_from_args
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.server import EmulatorAppRunner, build_app
from fmbench.emulator.settings import EmulatorSettings
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
        # The emulator times its answer from the request's arrival (the last read of its bytes, stamped by
        # EmulatorAppRunner's connections), so that is the server's time zero here too.
        arrived_s = getattr(request.protocol, "last_read_s", None)
        if key is not None:
            timings[key] = [received_s if arrived_s is None else arrived_s, writes_s]
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
    runner = EmulatorAppRunner(
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
        return [sys.executable, str(Path(__file__).resolve()), *self.settings_argv]


async def fetch_server_timings(base_url: str) -> dict[str, tuple[float, list[float]]]:
    """Prompt text -> (handler start, [write times]) of the requests served since the last fetch."""
    async with aiohttp.ClientSession() as session, session.get(base_url + TIMINGS_PATH) as response:
        response.raise_for_status()
        raw = await response.json()
    return {key: (float(value[0]), [float(t) for t in value[1]]) for key, value in raw.items()}


class CallStampingClient(OpenAIClient):
    """``OpenAIClient`` that also notes, per prompt text, when ``invoke`` was called.

    The product's client stamps a request as sent when its bytes go to the connection; this adds the
    moment before, so the client's own preparation (which the runner counts as schedule lag, not into
    TTFT) can be shown beside the rest. One dictionary write per request.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call_start_s: dict[str, float] = {}

    async def invoke(
        self,
        prompt_text: str,
        params: InferenceParameters,
        timeout_s: float,
        *,
        messages: list[dict[str, str]] | None = None,
    ) -> InvocationResult:
        self.call_start_s[prompt_text] = perf_counter()
        return await super().invoke(prompt_text, params, timeout_s, messages=messages)


if __name__ == "__main__":
    sys.exit(main())
