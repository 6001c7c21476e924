"""The emulator's running and waiting requests, as /metrics (read by the product's parser) and /health say
them, for every timing mode and every API, streamed or not: the requests held open are the ones counted."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from held_batch import held_batch_profile

from fmbench.emulator.profiles import EmulatorProfile
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.server_metrics import PointKey, parse_exposition

POINT = PointKey("concurrency", 6, None, "b")
PROMPT = "What is the capital of France? Answer in one word."
_CHAT = {"model": "m", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
_TEXT = {"inputs": PROMPT, "parameters": {"max_new_tokens": 4}}
_CONVERSE = {
    "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
    "inferenceConfig": {"maxTokens": 4},
}
# One request per API and answer style: OpenAI, SageMaker and Bedrock Converse, each streamed and not.
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {**_CHAT, "stream": True}),
    ("/v1/chat/completions", _CHAT),
    ("/endpoints/e/invocations-response-stream", {**_TEXT, "stream": True}),
    ("/endpoints/e/invocations", _TEXT),
    ("/model/m/converse-stream", _CONVERSE),
    ("/model/m/converse", _CONVERSE),
]
HELD = len(REQUESTS)
# A batch of 4 held for the whole test: four requests run, two wait.
SLOW_BATCH = held_batch_profile(4)


async def _scrape(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    async with session.get(url + "/metrics") as response:
        rows = parse_exposition(await response.text(), 0.0, POINT)
    value = {row.metric: row.value for row in rows}
    return value["vllm:num_requests_running"], value["vllm:num_requests_waiting"]


async def _until(
    session: aiohttp.ClientSession, url: str, wanted: tuple[float, float]
) -> tuple[float, float]:
    """Scrape until /metrics says ``wanted`` (running, waiting), or 20 s have passed; the last scrape."""
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + 20
    seen = await _scrape(session, url)
    while seen != wanted and loop.time() < deadline_s:
        await asyncio.sleep(0.02)
        seen = await _scrape(session, url)
    return seen


async def _health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/health") as response:
        body: dict[str, Any] = await response.json()
        return body


async def _send(session: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]) -> int:
    async with session.post(url + path, json=body) as response:
        await response.read()
        return response.status


@pytest.mark.parametrize(
    ("settings", "profile", "held"),
    [
        # fixed timing (no batch engine): every request in flight runs
        (EmulatorSettings(ttft_ms=60_000, itl_ms=1, output_tokens=4), None, (HELD, 0)),
        # the batch engine: 4 in the batch, the other 2 in its queue
        (EmulatorSettings(), SLOW_BATCH, (4, HELD - 4)),
        # hanging requests never reach the engine, and are in flight all the same
        (EmulatorSettings(hang_rate=1.0), SLOW_BATCH, (HELD, 0)),
    ],
    ids=["fixed-timing", "batch-engine", "hanging"],
)
async def test_requests_held_open_are_running_or_waiting_until_they_leave(
    settings: EmulatorSettings, profile: EmulatorProfile | None, held: tuple[int, int]
) -> None:
    async with running_emulator(settings, profile=profile) as url, aiohttp.ClientSession() as session:
        assert await _scrape(session, url) == (0, 0)
        tasks = [asyncio.create_task(_send(session, url, path, body)) for path, body in REQUESTS]
        try:
            assert await _until(session, url, held) == held
            health = await _health(session, url)
            assert (health["in_flight"], health["running"], health["waiting"]) == (HELD, *held)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)
        # the clients left: the server lets go of every request
        assert await _until(session, url, (0, 0)) == (0, 0)
        assert (await _health(session, url))["in_flight"] == 0


async def test_requests_that_finish_leave_nothing_running() -> None:
    """Fixed timing with a 3 s TTFT: all six are seen running, then each is answered whole, and then none
    runs. (The six must reach the server within the 3 s; they take milliseconds.)"""
    settings = EmulatorSettings(ttft_ms=3_000, itl_ms=1, output_tokens=4)
    async with running_emulator(settings) as url, aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(_send(session, url, path, body)) for path, body in REQUESTS]
        assert await _until(session, url, (HELD, 0)) == (HELD, 0)
        assert await asyncio.gather(*tasks) == [200] * HELD
        assert await _until(session, url, (0, 0)) == (0, 0)
        health = await _health(session, url)
    assert (health["succeeded_total"], health["peak_in_flight"], health["in_flight"]) == (HELD, HELD, 0)
