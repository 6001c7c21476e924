"""The Bedrock Converse client (aiobotocore) against the emulator over loopback: timings and failures."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.dataset as ds
import pytest
from aiohttp import web

from fmbench.config import InferenceParameters
from fmbench.emulator.eventstream import exception_message, json_event_message
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints.base import (
    HTTP_5XX,
    HTTP_429,
    STREAM_CUT,
    InvocationResult,
)
from fmbench.endpoints.bedrock import BedrockClient
from fmbench.plan import plan_suite
from fmbench.runner import make_client, run_branch
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

if TYPE_CHECKING:
    from conftest import EmulatorHealth  # the fixture's type (tests/functional/conftest.py)

TTFT_MS = 40
ITL_MS = 8
OUTPUT_TOKENS = 6
PROMPT = "What is the capital of France?"  # 7 tokens for the emulator's simple tokenizer
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
STREAM = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=True)
ONCE = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=False)
ANSWER_WORDS = ["the", "of", "and", "to", "in", "is"]


@pytest.fixture(autouse=True)
def aws_credentials(offline_aws_credentials: None) -> None:
    """Every test here runs offline (see conftest.offline_aws_credentials)."""


def emulator(**faults: float) -> Any:
    return running_emulator(
        EmulatorSettings(ttft_ms=TTFT_MS, itl_ms=ITL_MS, output_tokens=OUTPUT_TOKENS, **faults)
    )


def client_for(url: str, max_connections: int = 4) -> BedrockClient:
    return BedrockClient(MODEL_ID, endpoint_url=url, max_connections=max_connections)


async def invoke_once(url: str, params: InferenceParameters, timeout_s: float = 5.0) -> InvocationResult:
    """One request on a fresh client, after the probe that warms its pool (as the runner's does)."""
    async with client_for(url) as client:
        await client.probe(2.0)
        return await client.invoke(PROMPT, params, timeout_s)


# ---------------------------------------------------------------------------------- answers and timing


async def test_converse_stream_timings_text_and_usage_match_the_emulator() -> None:
    ttfts_ms: list[float] = []
    gaps_ms: list[float] = []
    async with emulator() as url, client_for(url) as client:
        assert await client.probe(2.0) is None
        for _ in range(5):
            result = await client.invoke(PROMPT, STREAM, 5.0)
            assert (result.status, result.http_status, result.error_class) == ("ok", 200, None), result
            assert len(result.chunk_perf_s) == OUTPUT_TOKENS
            assert result.first_token_perf_s == result.chunk_perf_s[0]
            assert result.end_perf_s >= result.chunk_perf_s[-1]
            assert result.text.split() == ANSWER_WORDS
            assert (result.usage_prompt_tokens, result.usage_completion_tokens) == (7, OUTPUT_TOKENS)
            ttfts_ms.append((result.first_token_perf_s - result.send_perf_s) * 1000)
            gaps_ms += [(b - a) * 1000 for a, b in itertools.pairwise(result.chunk_perf_s)]
    assert statistics.median(ttfts_ms) == pytest.approx(TTFT_MS, abs=15)
    assert statistics.median(gaps_ms) == pytest.approx(ITL_MS, abs=3)


async def test_converse_gives_text_and_usage_without_first_token() -> None:
    async with emulator() as url:
        result = await invoke_once(url, ONCE)
    assert (result.status, result.http_status, result.first_token_perf_s, result.chunk_perf_s) == (
        "ok",
        200,
        None,
        [],
    )
    assert result.text.split() == ANSWER_WORDS
    assert (result.usage_prompt_tokens, result.usage_completion_tokens) == (7, OUTPUT_TOKENS)
    expected_ms = TTFT_MS + (OUTPUT_TOKENS - 1) * ITL_MS
    assert (result.end_perf_s - result.send_perf_s) * 1000 == pytest.approx(expected_ms, abs=30)


# ------------------------------------------------------------------------------------------- failures


async def test_an_api_key_stands_in_for_credentials_in_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key")
    async with emulator() as url, client_for(url) as client:
        assert await client.probe(2.0) is None


# ------------------------------------------------------------------- a scripted service for wire details

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def scripted(scripted_server: Callable[..., Awaitable[str]]) -> Callable[[Handler], Awaitable[str]]:
    """Starts a scripted server for one handler on the generation route(s); returns its URL."""

    async def start(handler: Handler) -> str:
        return await scripted_server(handler, "/model/{model_id}/converse-stream")

    return start


def stream_with(last: bytes, seen: list[dict[str, Any]] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if seen is not None:
            seen.append({"body": await request.json(), "path": request.path})
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        await response.write(json_event_message("messageStart", {"role": "assistant"}))
        await response.write(
            json_event_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " Paris"}})
        )
        await response.write(last)
        await response.write_eof()
        return response

    return handler


@pytest.mark.parametrize(
    ("event", "error_class"),
    [("throttlingException", HTTP_429), ("internalServerException", HTTP_5XX)],
)
async def test_error_events_inside_the_stream_keep_their_class_and_message(
    scripted, event: str, error_class: str
) -> None:
    url = await scripted(stream_with(exception_message(event, {"message": "went wrong mid-stream"})))
    result = await invoke_once(url, STREAM)
    assert (result.status, result.error_class, result.http_status) == ("error", error_class, 200)
    assert result.error_message == f"{event}: went wrong mid-stream"
    assert result.text == " Paris"


async def test_a_model_stream_error_is_a_server_error(scripted) -> None:
    # botocore keeps only the code and message of an error event, so the model's own status is not known.
    body = {"message": "model overloaded", "originalStatusCode": 429, "originalMessage": "busy"}
    url = await scripted(stream_with(exception_message("modelStreamErrorException", body)))
    result = await invoke_once(url, STREAM)
    assert (result.error_class, result.error_message) == (
        HTTP_5XX,
        "modelStreamErrorException: model overloaded",
    )


async def test_the_request_follows_the_converse_api_and_a_stream_without_message_stop_is_cut(
    scripted,
) -> None:
    seen: list[dict[str, Any]] = []
    url = await scripted(stream_with(json_event_message("contentBlockStop", {"contentBlockIndex": 0}), seen))
    params = InferenceParameters(max_new_tokens=5, temperature=0.2, top_p=0.9, stream=True)
    async with client_for(url) as client:
        result = await client.invoke("Hello", params, 5.0)
    assert (result.status, result.error_class) == ("error", STREAM_CUT)
    assert result.error_message == "the stream ended without messageStop, after 3 events"
    assert seen == [
        {
            "path": f"/model/{MODEL_ID}/converse-stream",
            "body": {
                "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
                "inferenceConfig": {"maxTokens": 5, "temperature": 0.2, "topP": 0.9},
            },
        }
    ]


# ------------------------------------------------------------------------------------- runner wiring


def bedrock_spec(tmp_path: Path, url: str) -> BranchSpec:
    data = {
        "name": "bedrock-test",
        "targets": [
            {
                "name": "br",
                "platform": "bedrock",
                "model_id": MODEL_ID,
                "region": "us-west-2",
                "endpoint_url": url,
            }
        ],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": OUTPUT_TOKENS},
            "max_prompts_per_bin": 3,
        },
        "load": {"concurrency": [2], "requests_per_level": 4, "request_timeout_s": 5},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-1").branches
    return spec


def test_make_client_builds_a_bedrock_client_from_the_target(tmp_path: Path) -> None:
    client = make_client(bedrock_spec(tmp_path, "http://127.0.0.1:9"))
    assert isinstance(client, BedrockClient)
    assert (client.model_id, client.region, client.endpoint_url) == (
        MODEL_ID,
        "us-west-2",
        "http://127.0.0.1:9",
    )
    assert client.max_connections == 2


async def test_a_bedrock_branch_writes_records_with_server_token_counts(tmp_path: Path) -> None:
    async with emulator() as url:
        outcome = await run_branch(bedrock_spec(tmp_path, url))
    assert (outcome.status, outcome.reason, outcome.records_written) == ("succeeded", None, 4)
    rows = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table().to_pylist()
    assert len(rows) == 4
    assert statistics.median(row["ttft_s"] for row in rows) == pytest.approx(TTFT_MS / 1000, abs=0.015)
    for row in rows:
        assert (row["status"], row["platform"], row["http_status"]) == ("ok", "bedrock", 200)
        assert (row["token_source"], row["completion_tokens"], len(row["itl_s"])) == (
            "server",
            OUTPUT_TOKENS,
            5,
        )
        assert 50 <= row["prompt_tokens"] < 500


async def test_concurrent_requests_do_not_wait_for_each_other(emulator_health: EmulatorHealth) -> None:
    async with emulator() as url, client_for(url, max_connections=8) as client:
        await client.probe(2.0)
        results = await asyncio.gather(*(client.invoke(PROMPT, STREAM, 5.0) for _ in range(16)))
        served = await emulator_health(url)
    assert [r.status for r in results] == ["ok"] * 16
    # The server saw them overlap (one after another would be 1), never more than the pool's 8 at once.
    assert 2 <= served["peak_in_flight"] <= 8
