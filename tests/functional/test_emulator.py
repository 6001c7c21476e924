"""Functional tests of the emulator over real loopback HTTP: wire format, timing, batching and faults."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from fmbench.emulator import (
    EmulatorProcess,
    EmulatorProfile,
    EmulatorSettings,
    EmulatorStartError,
    get_profile,
    running_emulator,
)
from fmbench.tokenizer import get_tokenizer

FAST = EmulatorSettings(ttft_ms=5, itl_ms=1, output_tokens=64, model="test-model")


def _fast(**changes: Any) -> EmulatorSettings:
    return EmulatorSettings.model_validate({**FAST.model_dump(), **changes})


def _chat(content: str = "Hello there, how are you?", **fields: Any) -> dict[str, Any]:
    return {"model": "test-model", "messages": [{"role": "user", "content": content}], **fields}


def _words(n_tokens: int) -> str:
    return " ".join(["lorem"] * n_tokens)


def _test_profile(**overrides: Any) -> EmulatorProfile:
    values: dict[str, Any] = {
        "name": "test",
        "instance_type": "ml.test",
        "price_per_hour_usd": 1.0,
        "prefill_base_ms": 2.0,
        "prefill_ms_per_token": 0.0,
        "decode_base_ms": 5.0,
        "decode_ms_per_seq": 0.0,
        "max_batch": 64,
        "jitter_frac": 0.0,
    }
    values.update(overrides)
    return EmulatorProfile.model_validate(values)


@dataclass
class StreamResult:
    events: list[Any] = field(default_factory=list)
    ttft_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [event for event in self.events if isinstance(event, dict)]


def _content(chunk: dict[str, Any]) -> str:
    if not chunk["choices"]:
        return ""
    choice = chunk["choices"][0]
    return choice["delta"].get("content") or "" if "delta" in choice else choice.get("text") or ""


async def _stream(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> StreamResult:
    result = StreamResult()
    start_s = time.perf_counter()
    try:
        async with session.post(url + path, json={**body, "stream": True}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            async for raw in response.content:
                line = raw.decode().strip()
                if not line:
                    continue
                assert line.startswith("data: ")
                data = line[len("data: ") :]
                event = data if data == "[DONE]" else json.loads(data)
                result.events.append(event)
                if isinstance(event, dict) and _content(event):
                    now_s = time.perf_counter() - start_s
                    result.token_times_s.append(now_s)
                    if result.ttft_s is None:
                        result.ttft_s = now_s
    except aiohttp.ClientError as exc:
        result.error = exc
    result.total_s = time.perf_counter() - start_s
    return result


async def _health(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url + "/health") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def _wait_idle(session: aiohttp.ClientSession, url: str, timeout_s: float = 3.0) -> dict[str, Any]:
    deadline_s = time.monotonic() + timeout_s
    while True:
        health = await _health(session, url)
        if health["in_flight"] == 0 and health.get("running", 0) == 0 and health.get("waiting", 0) == 0:
            return health
        if time.monotonic() > deadline_s:
            raise AssertionError(f"the emulator did not become idle: {health}")
        await asyncio.sleep(0.02)


async def _wait_health(
    session: aiohttp.ClientSession, url: str, what: str, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The emulator's health once ``holds`` it (polled, not a fixed sleep: a busy machine is slower)."""
    deadline_s = time.monotonic() + 10.0
    while True:
        health = await _health(session, url)
        if holds(health):
            return health
        if time.monotonic() > deadline_s:
            raise AssertionError(f"waited 10 s for {what}: {health}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


@pytest.fixture
async def fast_url() -> AsyncIterator[str]:
    async with running_emulator(FAST) as url:
        yield url


# ------------------------------------------------------------------------------------------ wire format


async def test_streaming_chat_shape_with_usage(session: aiohttp.ClientSession, fast_url: str) -> None:
    result = await _stream(session, fast_url, _chat(max_tokens=6, stream_options={"include_usage": True}))
    assert result.done and result.error is None
    chunks = result.chunks
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    content_chunks = [chunk for chunk in chunks if _content(chunk)]
    assert len(content_chunks) == 6
    assert content_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    tokenizer = get_tokenizer("simple")
    assert all(tokenizer.count(_content(chunk)) == 1 for chunk in content_chunks)
    finish, usage_chunk = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "length"
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in content_chunks)
    assert usage_chunk["choices"] == []
    prompt_tokens = tokenizer.count("Hello there, how are you?")
    assert usage_chunk["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 6,
        "total_tokens": prompt_tokens + 6,
    }


async def test_streaming_completions_shape_without_usage(
    session: aiohttp.ClientSession, fast_url: str
) -> None:
    body = {"model": "m", "prompt": "Once upon a time", "max_tokens": 5}
    result = await _stream(session, fast_url, body, path="/v1/completions")
    assert result.done
    chunks = result.chunks
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert [bool(_content(chunk)) for chunk in chunks] == [True] * 5 + [False]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(not chunk.get("usage") for chunk in chunks)


async def test_fixed_mode_output_tokens_cap_gives_finish_reason_stop(
    session: aiohttp.ClientSession, fast_url: str
) -> None:
    result = await _stream(session, fast_url, _chat(max_tokens=1000))
    assert len(result.token_times_s) == 64
    assert result.chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("settings", [FAST, EmulatorSettings(model="test-model")], ids=["fixed", "batched"])
async def test_non_streaming_usage_matches_the_tokenizer(
    session: aiohttp.ClientSession, settings: EmulatorSettings
) -> None:
    prompt = "The quick brown fox; it jumps over the lazy dog (twice)!"
    tokenizer = get_tokenizer("simple")
    async with running_emulator(settings) as url:
        async with session.post(url + "/v1/chat/completions", json=_chat(prompt, max_tokens=7)) as response:
            assert response.status == 200
            chat = await response.json()
        completion_body = {"prompt": prompt, "max_completion_tokens": 3}
        async with session.post(url + "/v1/completions", json=completion_body) as response:
            completion = await response.json()
        async with session.post(url + "/v1/completions", json={"prompt": prompt}) as response:
            default_tokens = (await response.json())["usage"]["completion_tokens"]
    assert chat["object"] == "chat.completion"
    assert chat["model"] == "test-model"
    assert chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["prompt_tokens"] == tokenizer.count(prompt) == 15
    assert (
        chat["usage"]["completion_tokens"] == 7 == tokenizer.count(chat["choices"][0]["message"]["content"])
    )
    assert chat["usage"]["total_tokens"] == 22
    assert completion["object"] == "text_completion"
    assert completion["usage"]["completion_tokens"] == 3 == tokenizer.count(completion["choices"][0]["text"])
    assert default_tokens == (64 if settings.fixed_timing else 16)


async def test_models_health_and_ping(session: aiohttp.ClientSession) -> None:
    async with running_emulator(EmulatorSettings(model="my-model", profile="g5-12xlarge")) as url:
        async with session.get(url + "/v1/models") as response:
            models = await response.json()
        health = await _health(session, url)
        async with session.get(url + "/ping") as response:
            assert response.status == 200
            ping = await response.json()
    assert [model["id"] for model in models["data"]] == ["my-model"]
    assert health["status"] == ping["status"] == "ok"
    assert (health["profile"], health["instance_type"], health["price_per_hour_usd"]) == (
        "g5-12xlarge",
        "ml.g5.12xlarge",
        7.09,
    )
    assert health["mode"] == "batched"


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", b'{"model": "m"}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}'),
        ("/v1/completions", b'{"model": "m"}'),
    ],
)
async def test_bad_bodies_get_openai_style_400(
    session: aiohttp.ClientSession, fast_url: str, path: str, data: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    async with session.post(fast_url + path, data=data, headers=headers) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]


# ------------------------------------------------------------------------------------------ timing


async def test_fixed_mode_timing(session: aiohttp.ClientSession) -> None:
    settings = EmulatorSettings(ttft_ms=50, itl_ms=10, output_tokens=8)
    async with running_emulator(settings) as url:
        results = [await _stream(session, url, _chat()) for _ in range(5)]
        start_s = time.perf_counter()
        async with session.post(url + "/v1/completions", json={"prompt": "x"}) as response:
            await response.json()
        non_streaming_s = time.perf_counter() - start_s
    assert all(len(result.token_times_s) == 8 for result in results)
    ttft_ms = statistics.median(result.ttft_s or 0.0 for result in results) * 1000
    gaps_ms = statistics.median(
        (b - a) * 1000 for result in results for a, b in itertools.pairwise(result.token_times_s)
    )
    assert 50 <= ttft_ms <= 65
    assert 7 <= gaps_ms <= 13
    # 50 + 7 * 10 ms, then the whole body at once.
    assert 0.115 <= non_streaming_s <= 0.2


async def test_batched_latency_grows_with_prompt_size(session: aiohttp.ClientSession) -> None:
    profile = _test_profile(prefill_ms_per_token=0.2)
    async with running_emulator(EmulatorSettings(), profile=profile) as url:
        short = await _stream(session, url, _chat(_words(10), max_tokens=4))
        long = await _stream(session, url, _chat(_words(1500), max_tokens=4))
    # Prefill: 2 + 0.2 * 10 = 4 ms against 2 + 0.2 * 1500 = 302 ms.
    assert short.ttft_s is not None and long.ttft_s is not None
    assert long.ttft_s - short.ttft_s >= 0.2
    assert long.total_s > short.total_s + 0.2


async def test_batched_latency_grows_with_concurrency(session: aiohttp.ClientSession) -> None:
    profile = _test_profile(decode_base_ms=4, decode_ms_per_seq=4)
    async with running_emulator(EmulatorSettings(), profile=profile) as url:
        alone = await _stream(session, url, _chat(max_tokens=11))
        together = await asyncio.gather(*(_stream(session, url, _chat(max_tokens=11)) for _ in range(8)))
    # Ten decode steps of 8 ms alone, of 36 ms with eight sequences in the batch.
    gap_alone_s = (alone.token_times_s[-1] - alone.token_times_s[0]) / 10
    gap_together_s = statistics.median((r.token_times_s[-1] - r.token_times_s[0]) / 10 for r in together)
    assert gap_together_s > 2.5 * gap_alone_s
    assert min(r.total_s for r in together) > alone.total_s + 0.15


async def test_requests_beyond_max_batch_queue(session: aiohttp.ClientSession) -> None:
    async with running_emulator(EmulatorSettings(profile="g5-xlarge")) as url:
        pending = [asyncio.ensure_future(_stream(session, url, _chat(max_tokens=8))) for _ in range(5)]
        # All five are in the model (running or waiting) before anything is looked at.
        health = await _wait_health(
            session, url, "five in the model", lambda h: h.get("running", 0) + h.get("waiting", 0) >= 5
        )
        results = await asyncio.gather(*pending)
        after = await _health(session, url)
    assert (health["running"], health["waiting"]) == (4, 1)
    assert (health["in_flight"], after["in_flight"], after["peak_in_flight"]) == (5, 0, 5)
    by_ttft = sorted(results, key=lambda r: r.ttft_s or 0.0)
    assert all(result.done for result in results)
    last, first_batch = by_ttft[-1], by_ttft[:4]
    assert last.ttft_s is not None
    # The fifth starts only once the first four have finished.
    assert last.ttft_s >= min(r.total_s for r in first_batch) - 0.02
    assert last.ttft_s > 3 * max(r.ttft_s or 0.0 for r in first_batch)


async def test_disconnected_clients_leave_the_engine(session: aiohttp.ClientSession) -> None:
    profile = _test_profile(max_batch=2)
    async with running_emulator(EmulatorSettings(), profile=profile) as url:
        async with session.post(
            url + "/v1/chat/completions", json=_chat(max_tokens=10_000, stream=True)
        ) as r:
            await r.content.readline()
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=0.2)
            async with session.post(
                url + "/v1/completions", json={"prompt": "x", "max_tokens": 10_000}, timeout=timeout
            ):
                pass
        await _wait_idle(session, url)
        # The freed slots serve new requests at once.
        result = await _stream(session, url, _chat(max_tokens=3))
        assert result.done and result.ttft_s is not None and result.ttft_s < 0.2


# ------------------------------------------------------------------------------------------ faults


async def test_error_500(session: aiohttp.ClientSession) -> None:
    async with running_emulator(_fast(error_500_rate=1.0)) as url:
        for _ in range(3):
            async with session.post(url + "/v1/chat/completions", json=_chat()) as response:
                assert response.status == 500
                assert (await response.json())["error"]["type"] == "server_error"


async def test_error_429_has_retry_after(session: aiohttp.ClientSession) -> None:
    settings = _fast(error_429_rate=1.0)
    async with (
        running_emulator(settings) as url,
        session.post(url + "/v1/chat/completions", json=_chat(stream=True)) as response,
    ):
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"]["code"] == "rate_limit_exceeded"


async def test_fault_rates_are_seeded_fractions(session: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        settings = EmulatorSettings(ttft_ms=0, itl_ms=0, output_tokens=1, error_500_rate=0.5, seed=seed)
        async with running_emulator(settings) as url:
            codes = []
            for _ in range(40):
                async with session.post(url + "/v1/completions", json={"prompt": "x"}) as response:
                    codes.append(response.status)
            return codes

    first = await statuses(7)
    assert first == await statuses(7)
    assert set(first) == {200, 500}
    assert 8 <= first.count(500) <= 32


async def test_hang_times_out_and_server_stays_healthy(session: aiohttp.ClientSession) -> None:
    async with running_emulator(_fast(hang_rate=1.0)) as url:
        with pytest.raises(asyncio.TimeoutError):
            timeout = aiohttp.ClientTimeout(total=0.3)
            async with session.post(url + "/v1/chat/completions", json=_chat(), timeout=timeout):
                pass
        health = await _wait_idle(session, url)
        assert health["status"] == "ok"
        # A hang in flight does not hold up shutdown.
        hanging = asyncio.ensure_future(session.post(url + "/v1/chat/completions", json=_chat()))
        await _wait_health(session, url, "the hanging request", lambda h: h["in_flight"] >= 1)
        stop_start_s = time.perf_counter()
    assert time.perf_counter() - stop_start_s < 1.0
    with pytest.raises(aiohttp.ClientError):
        await hanging


async def test_cut_stream_ends_without_done(session: aiohttp.ClientSession) -> None:
    async with running_emulator(_fast(cut_stream_rate=1.0)) as url:
        result = await _stream(session, url, _chat(max_tokens=10))
        with pytest.raises(aiohttp.ClientError):
            async with session.post(url + "/v1/chat/completions", json=_chat(max_tokens=10)) as response:
                await response.read()
        health = await _wait_idle(session, url)
    assert not result.done
    assert 1 <= len(result.token_times_s) < 10
    assert "[DONE]" not in result.events
    assert health["status"] == "ok"


# ------------------------------------------------------------------------------------------ processes


def test_emulator_process_starts_serves_and_stops() -> None:
    settings = EmulatorSettings(ttft_ms=1, itl_ms=1, output_tokens=2, profile="g5-xlarge")
    with EmulatorProcess(settings) as emulator:
        pid = emulator.pid
        assert pid is not None and emulator.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(emulator.url + "/health", timeout=5) as response:
            health = json.load(response)
        assert health["instance_type"] == get_profile("g5-xlarge").instance_type
        assert health["mode"] == "fixed"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_emulator_process_reports_a_failed_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(EmulatorStartError, match="exited with code 1"),
            EmulatorProcess(EmulatorSettings(port=port)),
        ):
            pass


def test_module_lists_profiles() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "fmbench.emulator", "--list-profiles"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0
    assert "ml.g5.2xlarge" in completed.stdout


async def test_fixed_timing_counts_from_the_requests_arrival_not_its_handler_start() -> None:
    # The handler starts once the headers are in; a body that comes 300 ms later is when the request
    # arrived. The first token must come TTFT after the body, neither at once nor 300 ms early.
    settings = EmulatorSettings(ttft_ms=50, itl_ms=5, output_tokens=4)
    body = json.dumps({**_chat(), "stream": True}).encode()
    async with running_emulator(settings) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode())
            await writer.drain()
            await asyncio.sleep(0.3)
            writer.write(body)
            await writer.drain()
            body_sent_s = time.perf_counter()
            received = b""
            while b"data: {" not in received:
                chunk = await asyncio.wait_for(reader.read(4096), timeout=5)
                assert chunk, "the emulator closed the connection before the first token"
                received += chunk
            first_token_s = time.perf_counter() - body_sent_s
        finally:
            writer.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert 0.05 <= first_token_s < 0.2, first_token_s
