"""The OpenAI client over real loopback HTTP: timings against the emulator's fixed schedule, and failures."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from fmbench.config import InferenceParameters
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints.base import (
    HTTP_4XX,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    InvocationResult,
)
from fmbench.endpoints.openai import OpenAIClient

if TYPE_CHECKING:
    from conftest import EmulatorHealth  # the fixture's type (tests/functional/conftest.py)

TTFT_MS = 50
ITL_MS = 10
OUTPUT_TOKENS = 8
STREAM = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=True)
NO_STREAM = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=False)
PROMPT = "What is the capital of France?"  # 7 tokens for the emulator's simple tokenizer


def emulator(**faults: float) -> Any:
    return running_emulator(
        EmulatorSettings(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=OUTPUT_TOKENS, **faults)
    )


async def invoke_once(url: str, params: InferenceParameters, api: str = "chat", timeout_s: float = 5.0):
    async with OpenAIClient(url + "/v1", api=api, max_connections=2) as client:  # type: ignore[arg-type]
        return await client.invoke(PROMPT, params, timeout_s)


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_streaming_timings_match_the_emulator_schedule(api: str) -> None:
    ttfts_ms: list[float] = []
    gaps_ms: list[float] = []
    async with emulator() as url, OpenAIClient(url + "/v1", api=api, max_connections=4) as client:  # type: ignore[arg-type]
        for _ in range(5):
            result = await client.invoke(PROMPT, STREAM, 5.0)
            assert (result.status, result.http_status, result.error_class) == ("ok", 200, None)
            assert len(result.chunk_perf_s) == OUTPUT_TOKENS
            assert result.first_token_perf_s == result.chunk_perf_s[0]
            assert result.end_perf_s >= result.chunk_perf_s[-1]
            assert (result.usage_prompt_tokens, result.usage_completion_tokens) == (7, OUTPUT_TOKENS)
            assert len(result.text.split()) == OUTPUT_TOKENS
            ttfts_ms.append((result.first_token_perf_s - result.send_perf_s) * 1000)
            chunks = result.chunk_perf_s
            gaps_ms += [(b - a) * 1000 for a, b in itertools.pairwise(chunks)]
    assert statistics.median(ttfts_ms) == pytest.approx(TTFT_MS, abs=15)
    assert statistics.median(gaps_ms) == pytest.approx(ITL_MS, abs=3)


async def test_the_send_time_is_when_the_request_went_out_not_when_it_was_started() -> None:
    # While the request is under way to the wire (here: connecting), the loop is held up elsewhere for
    # 200 ms. That wait is the client's, not the endpoint's: it must not be counted into the TTFT.
    async with emulator() as url, OpenAIClient(url + "/v1", max_connections=1) as client:
        started_s = perf_counter()
        task = asyncio.create_task(client.invoke(PROMPT, STREAM, 5.0))
        await asyncio.sleep(0)  # the request has started and waits for its connection
        time.sleep(0.2)  # deliberately blocks the loop
        result = await task
    assert result.status == "ok", result.error_message
    assert result.first_token_perf_s is not None
    assert result.send_perf_s - started_s >= 0.2
    assert (result.first_token_perf_s - result.send_perf_s) * 1000 == pytest.approx(TTFT_MS, abs=15)


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_non_streaming_gives_text_and_usage_without_first_token(api: str) -> None:
    async with emulator() as url:
        result = await invoke_once(url, NO_STREAM, api)
    assert (result.status, result.first_token_perf_s, result.chunk_perf_s) == ("ok", None, [])
    assert (result.usage_prompt_tokens, result.usage_completion_tokens) == (7, OUTPUT_TOKENS)
    assert len(result.text.split()) == OUTPUT_TOKENS
    expected_ms = TTFT_MS + (OUTPUT_TOKENS - 1) * ITL_MS
    assert (result.end_perf_s - result.send_perf_s) * 1000 == pytest.approx(expected_ms, abs=30)


async def test_probe_of_a_running_endpoint_is_none() -> None:
    async with emulator() as url, OpenAIClient(url + "/v1") as client:
        assert await client.probe(1.0) is None


async def test_concurrent_requests_share_one_pool_of_connections(emulator_health: EmulatorHealth) -> None:
    async with emulator() as url, OpenAIClient(url + "/v1", max_connections=8) as client:
        results = await asyncio.gather(*(client.invoke(PROMPT, STREAM, 5.0) for _ in range(16)))
        served = await emulator_health(url)
    assert [r.status for r in results] == ["ok"] * 16
    # The server saw them overlap (one after another would be 1), never more than the pool's 8 at once.
    assert 2 <= served["peak_in_flight"] <= 8


async def test_open_connections_leaves_that_many_connections_for_the_requests_to_reuse() -> None:
    transports: set[int] = set()

    @web.middleware
    async def note_connection(request: web.Request, handler: Handler) -> web.StreamResponse:
        transports.add(id(request.transport))
        return await handler(request)

    async def answer(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)  # long enough for all six to be in flight together
        return web.json_response(
            {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": None}
        )

    app = web.Application(middlewares=[note_connection])
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        async with OpenAIClient(f"http://{host}:{port}/v1", max_connections=8) as client:
            await client.open_connections(6)  # /v1/models is a 404 here: still an answer on a connection
            assert len(transports) == 6
            results = await asyncio.gather(*(client.invoke(PROMPT, NO_STREAM, 5.0) for _ in range(6)))
    finally:
        await runner.cleanup()
    assert [r.status for r in results] == ["ok"] * 6
    assert len(transports) == 6  # the requests went out on the connections opened before


# ------------------------------------------------------------------ a scripted server for the wire details

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def scripted(scripted_server: Callable[..., Awaitable[str]]) -> Callable[[Handler], Awaitable[str]]:
    """Starts a scripted server for one handler on the generation route(s); returns its URL."""

    async def start(handler: Handler) -> str:
        return await scripted_server(handler, "/v1/chat/completions", "/v1/completions") + "/v1"

    return start


async def sse(request: web.Request, lines: list[bytes]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for line in lines:
        await response.write(line)
    await response.write_eof()
    return response


async def test_request_body_and_headers_follow_the_openai_api(scripted) -> None:
    seen: list[tuple[dict[str, Any], dict[str, str], str]] = []

    async def capture(request: web.Request) -> web.StreamResponse:
        seen.append((await request.json(), dict(request.headers), request.path))
        return await sse(
            request, [b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n']
        )

    url = await scripted(capture)
    params = InferenceParameters(max_new_tokens=5, temperature=0.0, top_p=0.9, stream=True)
    async with OpenAIClient(url, model="llama", api_key="sk-secret", headers={"X-Team": "bench"}) as client:
        result = await client.invoke("Hello", params, 5.0)
        await client.invoke("Hello", NO_STREAM, 5.0)
    body, headers, path = seen[0]
    assert path == "/v1/chat/completions"
    assert body == {
        "model": "llama",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 5,
        "temperature": 0.0,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert headers["Authorization"] == "Bearer sk-secret"
    assert headers["X-Team"] == "bench"
    assert headers["Accept-Encoding"] == "identity"
    assert "stream_options" not in seen[1][0] and "top_p" not in seen[1][0] and seen[1][0]["stream"] is False
    # finish_reason without [DONE] is a complete answer (some servers never send [DONE])
    assert (result.status, result.text, result.usage_completion_tokens) == ("ok", "hi", None)


async def test_sse_comments_blank_lines_and_role_chunks_are_not_tokens(scripted) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        return await sse(
            request,
            [
                b": keep-alive\n\n",
                b'data: {"choices":[{"delta":{"role":"assistant"},"finish_reason":null}]}\n\n',
                b'data:{"choices":[{"delta":{"content":"A"},"finish_reason":null}]}\r\n\r\n',
                b'event: message\ndata: {"choices":[{"delta":{"content":""},"finish_reason":null}]}\n\n',
                b'data: {"choices":[{"delta":{"content":"B"},"finish_reason":"stop"}]}\n\n',
                b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
                b"data: [DONE]\n\n",
            ],
        )

    result = await invoke_scripted(await scripted(stream), STREAM)
    assert (result.status, result.text, len(result.chunk_perf_s)) == ("ok", "AB", 2)
    assert (result.usage_prompt_tokens, result.usage_completion_tokens) == (3, 2)


async def test_stream_ending_without_done_or_finish_is_cut(scripted) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        return await sse(request, [b'data: {"choices":[{"delta":{"content":"A"},"finish_reason":null}]}\n\n'])

    result = await invoke_scripted(await scripted(stream), STREAM)
    assert (result.status, result.error_class, result.text) == ("error", STREAM_CUT, "A")


@pytest.mark.parametrize(
    ("lines", "stream"),
    [
        ([b"data: {not json\n\n"], True),
        ([b'{"choices": []}'], True),  # a JSON body where an event stream was asked for
        ([b'{"choices": "nope"}'], False),
    ],
)
async def test_unparsable_answers_are_malformed(scripted, lines: list[bytes], stream: bool) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        return await sse(request, lines)

    result = await invoke_scripted(await scripted(respond), STREAM if stream else NO_STREAM)
    assert (result.status, result.error_class) == ("error", MALFORMED_RESPONSE)


async def test_error_messages_never_carry_the_api_key(scripted) -> None:
    async def refuse(request: web.Request) -> web.StreamResponse:
        message = {
            "error": {"message": f"Incorrect API key provided: {request.headers['Authorization'][7:]}"}
        }
        return web.json_response(message, status=401)

    async with OpenAIClient(await scripted(refuse), api_key="sk-very-secret") as client:
        result = await client.invoke("Hello", STREAM, 5.0)
    assert (result.error_class, result.http_status) == (HTTP_4XX, 401)
    assert result.error_message == "HTTP 401: Incorrect API key provided: ***"


async def test_an_error_event_inside_the_stream_fails_the_request(scripted) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        error = {"error": {"message": "engine died", "code": 500}}
        return await sse(
            request,
            [
                b'data: {"choices":[{"delta":{"content":"A"},"finish_reason":null}]}\n\n',
                b"data: " + json.dumps(error).encode() + b"\n\n",
            ],
        )

    result = await invoke_scripted(await scripted(stream), STREAM)
    assert (result.status, result.error_class, result.error_message) == (
        "error",
        STREAM_CUT,
        "error event in stream: engine died",
    )


async def invoke_scripted(url: str, params: InferenceParameters) -> InvocationResult:
    async with OpenAIClient(url) as client:
        return await client.invoke("Hello", params, 5.0)
