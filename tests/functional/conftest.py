"""Fixtures the functional tests share: offline AWS credentials, a scripted HTTP server on loopback and
the emulator's own count of what it served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StartScripted = Callable[..., Awaitable[str]]
EmulatorHealth = Callable[[str], Awaitable[dict[str, Any]]]


@pytest.fixture
def offline_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Dummy credentials and no config files: nothing here may reach (or sign for) real AWS."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent/fmbench-test-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/fmbench-test-credentials",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """``await serve(app)`` serves an aiohttp application on 127.0.0.1 and returns its base URL
    (``http://127.0.0.1:PORT``); every application served is stopped after the test."""
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def scripted_server(app_server: Callable[[web.Application], Awaitable[str]]) -> StartScripted:
    """``await start(handler, *paths)`` serves ``handler`` on those POST paths on 127.0.0.1 and returns the
    server's base URL (``http://127.0.0.1:PORT``); every server started is stopped after the test."""

    async def start(handler: Handler, *paths: str) -> str:
        app = web.Application()
        for path in paths:
            app.router.add_post(path, handler)
        return await app_server(app)

    return start


@pytest.fixture
async def emulator_health() -> AsyncIterator[EmulatorHealth]:
    """``await health(url)`` reads the emulator's ``/health``: among others ``in_flight`` and
    ``peak_in_flight``, the most requests it served at once, seen from the server's side."""
    async with aiohttp.ClientSession() as session:

        async def health(url: str) -> dict[str, Any]:
            async with session.get(url + "/health") as response:
                response.raise_for_status()
                body: dict[str, Any] = await response.json()
                return body

        yield health


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A real HTTP S3 (moto) on loopback, one per test module: pyarrow's C++ S3 client and a runner
    subprocess cannot be intercepted in-process."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
