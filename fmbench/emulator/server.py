"""The emulator's HTTP server: one port serving the OpenAI API and the AWS runtimes, at a profile's speed.

The routes (``openai_routes``, ``aws_routes``) build on ``generation`` and ``state``; this module puts
them into one application with ``/health`` and runs it with connections that stamp each request's arrival.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from fmbench.emulator.answers import AnswerBook
from fmbench.emulator.aws_routes import add_aws_routes
from fmbench.emulator.engine import BatchEngine, LoopClock
from fmbench.emulator.generation import ReadStampingHandler
from fmbench.emulator.metrics import CONTENT_TYPE, exposition, metrics_registry
from fmbench.emulator.openai_routes import add_openai_routes
from fmbench.emulator.profiles import EmulatorProfile
from fmbench.emulator.settings import EmulatorSettings
from fmbench.emulator.state import STATE_KEY, EmulatorState

_SHUTDOWN_TIMEOUT_S = 5.0
_CLIENT_MAX_SIZE_BYTES = 16 * 1024 * 1024


def health_body(state: EmulatorState) -> dict[str, Any]:
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
        "succeeded_total": state.succeeded_total,
        "prompt_tokens_total": state.prompt_tokens_total,
        "generation_tokens_total": state.generation_tokens_total,
        "embeddings_total": state.embeddings_total,
        "temperatures": dict(state.temperatures),
    }
    if s.accuracy is not None:
        body["known_prompts"] = len(state.answers) if state.answers is not None else 0
        body["scripted_answers"] = state.scripted_answers
    if s.judge_error_rate is not None:
        body["verdicts"] = state.verdicts
    body["running"], body["waiting"] = state.occupancy
    if state.engine is None:
        body.update(ttft_ms=s.ttft_ms, itl_ms=s.itl_ms, output_tokens=s.output_tokens)
    return body


async def _health(request: web.Request) -> web.Response:
    return web.json_response(health_body(request.app[STATE_KEY]))


def _metrics_handler(state: EmulatorState) -> Callable[[web.Request], Awaitable[web.Response]]:
    registry = metrics_registry(state)

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(registry, state), headers={"Content-Type": CONTENT_TYPE})

    return metrics


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
    state = EmulatorState(
        settings=settings,
        profile=resolved,
        engine=engine,
        fault_rng=random.Random(settings.seed),
        clock=clock,
        answers=AnswerBook.read(settings.prompts_file) if settings.prompts_file else None,
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
    add_openai_routes(app)
    app.router.add_get("/health", _health)
    app.router.add_get("/ping", _health)
    app.router.add_get("/metrics", _metrics_handler(state))
    add_aws_routes(app)
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _ReadStampingServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return ReadStampingHandler(self, loop=self._loop, **self._kwargs)


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
