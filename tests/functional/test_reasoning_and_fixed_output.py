"""Reasoning answers and fixed output lengths, over real loopback HTTP: the emulator's fixed schedule is the
ground truth (a reasoning answer's first token at TTFT, its first answer token N gaps later)."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest
from aiohttp import web

from fmbench.config import InferenceParameters
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints.openai import OpenAIClient
from fmbench.loadgen.points import LoadPoint
from fmbench.loadgen.recording import Attempt, RecordContext, build_record
from fmbench.loadgen.timebase import EpochClock
from fmbench.payloads import Prompt
from fmbench.tokenizer import get_tokenizer

TTFT_MS = 50
ITL_MS = 10
OUTPUT_TOKENS = 8
REASONING_TOKENS = 3
PROMPT = "What is the capital of France?"
STREAM = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=True)


def reasoning_emulator(**overrides: Any) -> Any:
    settings = {
        "ttft_ms": TTFT_MS,
        "itl_ms": ITL_MS,
        "output_tokens": OUTPUT_TOKENS,
        "reasoning_tokens": REASONING_TOKENS,
        **overrides,
    }
    return running_emulator(EmulatorSettings(**settings))


async def test_a_reasoning_stream_times_its_first_token_and_its_first_answer_token() -> None:
    ttfts_ms: list[float] = []
    thinking_ms: list[float] = []
    async with reasoning_emulator() as url, OpenAIClient(url + "/v1", max_connections=2) as client:
        for _ in range(5):
            result = await client.invoke(PROMPT, STREAM, 5.0)
            assert result.status == "ok", result.error_message
            # every token is timed, reasoning included: TTFT is the first token of any kind
            assert len(result.chunk_perf_s) == OUTPUT_TOKENS
            assert result.first_token_perf_s == result.chunk_perf_s[0]
            assert result.first_answer_perf_s == result.chunk_perf_s[REASONING_TOKENS]
            assert len(result.reasoning_text.split()) == REASONING_TOKENS
            assert len(result.text.split()) == OUTPUT_TOKENS - REASONING_TOKENS
            assert result.usage_reasoning_tokens == REASONING_TOKENS
            assert result.usage_completion_tokens == OUTPUT_TOKENS
            assert result.first_answer_perf_s is not None and result.first_token_perf_s is not None
            ttfts_ms.append((result.first_token_perf_s - result.send_perf_s) * 1000)
            thinking_ms.append((result.first_answer_perf_s - result.first_token_perf_s) * 1000)
    assert statistics.median(ttfts_ms) == pytest.approx(TTFT_MS, abs=15)
    assert statistics.median(thinking_ms) == pytest.approx(REASONING_TOKENS * ITL_MS, abs=8)


async def test_a_plain_stream_answers_at_its_first_token() -> None:
    async with reasoning_emulator(reasoning_tokens=0) as url, OpenAIClient(url + "/v1") as client:
        result = await client.invoke(PROMPT, STREAM, 5.0)
    assert result.status == "ok", result.error_message
    assert result.first_answer_perf_s == result.first_token_perf_s is not None
    assert (result.reasoning_text, result.usage_reasoning_tokens) == ("", None)


async def test_a_non_streamed_reasoning_answer_keeps_reasoning_apart() -> None:
    params = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=False)
    async with reasoning_emulator() as url, OpenAIClient(url + "/v1") as client:
        result = await client.invoke(PROMPT, params, 5.0)
    assert result.status == "ok", result.error_message
    assert (result.first_token_perf_s, result.first_answer_perf_s) == (None, None)
    assert len(result.reasoning_text.split()) == REASONING_TOKENS
    assert len(result.text.split()) == OUTPUT_TOKENS - REASONING_TOKENS
    assert result.usage_reasoning_tokens == REASONING_TOKENS


async def test_the_completions_api_has_no_reasoning() -> None:
    async with (
        reasoning_emulator() as url,
        OpenAIClient(url + "/v1", api="completions") as client,
    ):
        result = await client.invoke(PROMPT, STREAM, 5.0)
    assert result.status == "ok", result.error_message
    assert len(result.text.split()) == OUTPUT_TOKENS
    assert result.reasoning_text == ""


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_fixed_output_tokens_makes_the_emulator_answer_exactly_max_tokens(api: str) -> None:
    # The emulated model stops after 4 tokens of its own accord; min_tokens and ignore_eos run it to 9.
    fixed = InferenceParameters(max_new_tokens=9, stream=True, fixed_output_tokens=True)
    free = InferenceParameters(max_new_tokens=9, stream=True)
    async with (
        reasoning_emulator(output_tokens=4, reasoning_tokens=0) as url,
        OpenAIClient(url + "/v1", api=api) as client,  # type: ignore[arg-type]
    ):
        fixed_result = await client.invoke(PROMPT, fixed, 5.0)
        free_result = await client.invoke(PROMPT, free, 5.0)
    assert fixed_result.usage_completion_tokens == 9
    assert len(fixed_result.chunk_perf_s) == 9
    assert free_result.usage_completion_tokens == 4


async def _scripted(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/v1"


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def test_newer_vllm_reasoning_deltas_without_usage_are_counted_locally() -> None:
    """vLLM's newer `delta.reasoning` field; no usage at all, so the record's counts are the tokenizer's;
    the request body carries min_tokens, ignore_eos and the extra body (which wins over fmbench's fields)."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for delta in (
            {"role": "assistant", "content": ""},
            {"reasoning": " let"},
            {"reasoning": " me think"},
            {"content": " Paris"},
            {"content": "."},
        ):
            await response.write(_event(delta))
        await response.write(_event({}, "stop") + b"data: [DONE]\n\n")
        return response

    runner, url = await _scripted(handler)
    params = InferenceParameters(max_new_tokens=6, stream=True, fixed_output_tokens=True)
    try:
        async with OpenAIClient(url, model="m", extra_body={"top_k": 7, "temperature": 0.0}) as client:
            result = await client.invoke(PROMPT, params, 5.0)
    finally:
        await runner.cleanup()
    assert result.status == "ok", result.error_message
    assert (result.text, result.reasoning_text) == (" Paris.", " let me think")
    assert len(result.chunk_perf_s) == 4  # two reasoning chunks, two answer chunks; the empty one is no token
    assert result.first_answer_perf_s == result.chunk_perf_s[2]
    (body,) = bodies
    assert (body["max_tokens"], body["min_tokens"], body["ignore_eos"]) == (6, 6, True)
    assert (body["top_k"], body["temperature"]) == (7, 0.0)

    prompt = Prompt(record_id="p", text=PROMPT, prompt_tokens=7, reference_answer=None)
    point = LoadPoint(
        concurrency=1, payload_bin="b", prompts=[prompt], params=params, timeout_s=5.0, requests=1
    )
    context = RecordContext("s", "br", "t", "openai", "m", None, None, None, None, "chat")
    record = build_record(
        Attempt(0, "measured", result.send_perf_s, prompt, result),
        point,
        context,
        EpochClock.start(),
        get_tokenizer("simple"),
    )
    # " let me think" is 3 simple tokens, " Paris." 2
    assert (record.reasoning_tokens, record.reasoning_tokens_local) == (3, 3)
    counts = (record.completion_tokens, record.completion_tokens_local, record.token_source)
    assert counts == (5, 5, "tokenizer")
    assert (record.max_tokens_requested, record.min_tokens_requested) == (6, 6)
    assert record.ttft_s is not None and record.time_to_first_answer_s is not None
    assert record.time_to_first_answer_s >= record.ttft_s
