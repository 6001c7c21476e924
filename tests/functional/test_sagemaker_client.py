"""The SageMaker client (aiobotocore) against the emulator over loopback: timings, formats, failures."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import pyarrow.dataset as ds
import pytest
from aiohttp import web

from fmbench.config import InferenceParameters
from fmbench.emulator.eventstream import event_message, exception_message
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints.base import (
    HTTP_4XX,
    HTTP_5XX,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    InvocationResult,
)
from fmbench.endpoints.formats import CustomFormat, LmiFormat, PayloadFormat, TgiFormat, VllmOpenAIFormat
from fmbench.endpoints.sagemaker import SageMakerClient
from fmbench.plan import plan_suite
from fmbench.runner import BranchSetupError, make_client, run_branch
from fmbench.spec import BranchSpec
from fmbench.suite import validate_suite_data

if TYPE_CHECKING:
    from conftest import EmulatorHealth  # the fixture's type (tests/functional/conftest.py)

TTFT_MS = 40
ITL_MS = 8
OUTPUT_TOKENS = 6
PROMPT = "What is the capital of France?"  # 7 tokens for the emulator's simple tokenizer
STREAM = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=True)
ONCE = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=False)
ANSWER_WORDS = ["the", "of", "and", "to", "in", "is"]


@pytest.fixture(autouse=True)
def aws_credentials(offline_aws_credentials: None) -> None:
    """Every test here runs offline (see conftest.offline_aws_credentials)."""


# The emulator answers {inputs, parameters} bodies in the style of its sagemaker_format setting; custom
# here is a user template that speaks LMI, reading each streamed line's token.text.
CASES: dict[str, tuple[str, Callable[[bool], PayloadFormat]]] = {
    "lmi": ("lmi", lambda stream: LmiFormat()),
    "tgi": ("tgi", lambda stream: TgiFormat()),
    "vllm-openai": ("vllm", lambda stream: VllmOpenAIFormat()),
    "custom": (
        "lmi",
        lambda stream: CustomFormat(
            '{"inputs": "{prompt}", "parameters": {"max_new_tokens": "{max_new_tokens}"}'
            + (', "stream": true}' if stream else "}"),
            "token.text" if stream else "generated_text",
        ),
    ),
}
# (prompt, completion) tokens each format's server reports; None where the tokenizer must count.
STREAM_USAGE = {"lmi": (None, 6), "tgi": (7, 6), "vllm-openai": (7, 6), "custom": (None, None)}
ONCE_USAGE = {"lmi": (None, 6), "tgi": (None, 6), "vllm-openai": (7, 6), "custom": (None, None)}


def emulator(sagemaker_format: str = "lmi", **faults: float) -> Any:
    return running_emulator(
        EmulatorSettings(
            ttft_ms=TTFT_MS,
            itl_ms=ITL_MS,
            output_tokens=OUTPUT_TOKENS,
            sagemaker_format=sagemaker_format,  # type: ignore[arg-type]
            **faults,
        )
    )


def client_for(url: str, payload: PayloadFormat | None = None, max_connections: int = 4) -> SageMakerClient:
    return SageMakerClient(
        "my-endpoint", payload or LmiFormat(), endpoint_url=url, max_connections=max_connections
    )


async def invoke_once(
    url: str, params: InferenceParameters, payload: PayloadFormat | None = None, timeout_s: float = 5.0
) -> InvocationResult:
    """One request on a fresh client, after the probe that warms its pool (as the runner's does)."""
    async with client_for(url, payload) as client:
        await client.probe(2.0)
        return await client.invoke(PROMPT, params, timeout_s)


# ---------------------------------------------------------------------------------- answers and timing


@pytest.mark.parametrize("name", list(CASES))
async def test_streaming_timings_text_and_usage_match_the_emulator(name: str) -> None:
    sagemaker_format, make_format = CASES[name]
    ttfts_ms: list[float] = []
    gaps_ms: list[float] = []
    async with emulator(sagemaker_format) as url, client_for(url, make_format(True)) as client:
        assert await client.probe(2.0) is None
        for _ in range(3):
            result = await client.invoke(PROMPT, STREAM, 5.0)
            assert (result.status, result.http_status, result.error_class) == ("ok", 200, None), result
            assert len(result.chunk_perf_s) == OUTPUT_TOKENS
            assert result.first_token_perf_s == result.chunk_perf_s[0]
            assert result.end_perf_s >= result.chunk_perf_s[-1]
            assert result.text.split() == ANSWER_WORDS
            assert (result.usage_prompt_tokens, result.usage_completion_tokens) == STREAM_USAGE[name]
            ttfts_ms.append((result.first_token_perf_s - result.send_perf_s) * 1000)
            gaps_ms += [(b - a) * 1000 for a, b in itertools.pairwise(result.chunk_perf_s)]
    assert statistics.median(ttfts_ms) == pytest.approx(TTFT_MS, abs=15)
    assert statistics.median(gaps_ms) == pytest.approx(ITL_MS, abs=3)


async def test_the_send_time_is_after_the_sdk_has_built_and_signed_the_request() -> None:
    # A slow step inside the SDK before sending (here a 200 ms before-sign hook; in life credential
    # refreshes, signing under load) is the client's time, not the endpoint's: not in the TTFT.
    async with emulator() as url, client_for(url) as client:
        assert await client.probe(2.0) is None
        sdk = await client._get_client()
        sdk.meta.events.register("before-sign.sagemaker-runtime", lambda **_: time.sleep(0.2))
        started_s = perf_counter()
        result = await client.invoke(PROMPT, STREAM, 5.0)
    assert result.status == "ok", result.error_message
    assert result.first_token_perf_s is not None
    assert result.send_perf_s - started_s >= 0.2
    assert (result.first_token_perf_s - result.send_perf_s) * 1000 == pytest.approx(TTFT_MS, abs=15)


@pytest.mark.parametrize("name", list(CASES))
async def test_non_streaming_gives_text_and_usage_without_first_token(name: str) -> None:
    sagemaker_format, make_format = CASES[name]
    async with emulator(sagemaker_format) as url:
        result = await invoke_once(url, ONCE, make_format(False))
    assert (result.status, result.http_status, result.first_token_perf_s, result.chunk_perf_s) == (
        "ok",
        200,
        None,
        [],
    )
    assert result.text.split() == ANSWER_WORDS
    assert (result.usage_prompt_tokens, result.usage_completion_tokens) == ONCE_USAGE[name]
    expected_ms = TTFT_MS + (OUTPUT_TOKENS - 1) * ITL_MS
    assert (result.end_perf_s - result.send_perf_s) * 1000 == pytest.approx(expected_ms, abs=30)


async def test_concurrent_requests_share_one_pool_of_connections_without_threads(
    emulator_health: EmulatorHealth,
) -> None:
    async with emulator() as url, client_for(url, max_connections=32) as client:
        await client.probe(2.0)  # builds the client, as the runner's probe does
        threads_before = threading.active_count()
        requests = [asyncio.ensure_future(client.invoke(PROMPT, STREAM, 5.0)) for _ in range(64)]
        await asyncio.sleep(TTFT_MS / 1000)
        threads_during = threading.active_count()
        results = await asyncio.gather(*requests)
        served = await emulator_health(url)
    assert [r.status for r in results] == ["ok"] * 64
    assert threads_during <= threads_before  # aiobotocore: requests in flight are sockets, not threads
    # The server saw them overlap (one after another would be 1), never more than the pool's 32 at once.
    assert 2 <= served["peak_in_flight"] <= 32


# ------------------------------------------------------------------------------------------- failures


async def test_a_body_the_container_refuses_is_a_client_error() -> None:
    async with emulator("vllm") as url:  # an OpenAI-only container, sent an LMI body
        result = await invoke_once(url, STREAM, LmiFormat())
    assert (result.status, result.error_class, result.http_status) == ("error", HTTP_4XX, 424)
    assert result.error_message is not None and "(container status 400)" in result.error_message


async def test_probe_of_a_running_endpoint_is_none_and_needs_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with emulator() as url:
        async with client_for(url) as client:
            assert await client.probe(2.0) is None
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name)
        async with client_for(url) as client:
            reason = await client.probe(2.0)
    assert reason is not None and reason.startswith("no AWS credentials found")


# ------------------------------------------------------------------- a scripted service for wire details

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
def scripted(scripted_server: Callable[..., Awaitable[str]]) -> Callable[[Handler], Awaitable[str]]:
    """Starts a scripted server for one handler on the generation route(s); returns its URL."""

    async def start(handler: Handler) -> str:
        return await scripted_server(handler, "/endpoints/{name}/invocations-response-stream")

    return start


async def event_stream(request: web.Request, frames: list[bytes], gap_s: float = 0.0) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
    await response.prepare(request)
    for frame in frames:
        await response.write(frame)
        if gap_s:
            await asyncio.sleep(gap_s)
    await response.write_eof()
    return response


async def test_lines_split_across_payload_parts_are_reassembled(scripted) -> None:
    seen: list[dict[str, Any]] = []
    lines = [
        b'{"token": {"id": 1, "text": " Paris"}}\n',
        b'{"token": {"id": 2, "text": " is"}}\n',
        b'{"token": {"id": 3, "text": " nice"}, "generated_text": " Paris is nice", '
        b'"details": {"finish_reason": "length", "generated_tokens": 3, "inputs": "q"}}\n',
    ]
    stream = b"".join(lines)
    # Parts cut lines anywhere: mid-line, several lines at once, the newline on its own.
    cuts = [0, 10, 38, 39, 60, len(stream) - 1, len(stream)]
    parts = [stream[a:b] for a, b in itertools.pairwise(cuts)]

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append({"body": await request.json(), "headers": dict(request.headers), "path": request.path})
        return await event_stream(request, [event_message("PayloadPart", part) for part in parts], 0.01)

    url = await scripted(handler)
    params = InferenceParameters(max_new_tokens=5, temperature=0.0, stream=True)
    result = await invoke_once(url, params)
    assert (result.status, result.text) == ("ok", " Paris is nice")
    assert len(result.chunk_perf_s) == 3
    assert result.usage_completion_tokens == 3
    request = seen[0]
    assert request["path"] == "/endpoints/my-endpoint/invocations-response-stream"
    assert request["body"] == {
        "inputs": PROMPT,
        "parameters": {"max_new_tokens": 5, "details": True, "do_sample": False},
        "stream": True,
    }
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/sagemaker/aws4_request" in request["headers"]["Authorization"]


async def test_a_model_stream_error_event_is_classified_with_its_message(scripted) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        frames = [
            event_message("PayloadPart", b'{"token": {"id": 1, "text": " Paris"}}\n'),
            exception_message("ModelStreamError", {"Message": "model crashed", "ErrorCode": "StreamBroken"}),
        ]
        return await event_stream(request, frames)

    result = await invoke_once(await scripted(handler), STREAM)
    assert (result.status, result.error_class, result.http_status) == ("error", HTTP_5XX, 200)
    assert result.error_message == "ModelStreamError: model crashed"
    assert result.text == " Paris"


async def test_a_custom_path_that_finds_no_text_in_the_stream_is_malformed() -> None:
    # "outputs" is where LMI's dynamic-batching handler streams text; this endpoint uses rolling batch.
    payload = CustomFormat('{"inputs": "{prompt}", "stream": true}', "outputs")
    async with emulator() as url:
        result = await invoke_once(url, STREAM, payload)
    assert (result.status, result.error_class) == ("error", MALFORMED_RESPONSE)
    assert result.error_message == "none of the 6 streamed lines had text at the response_text_path"


async def test_a_stream_ending_before_the_last_line_is_stream_cut(scripted) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await event_stream(request, [event_message("PayloadPart", b'{"token": {"text": " a"}}\n')])

    result = await invoke_once(await scripted(handler), STREAM)
    assert (result.status, result.error_class) == ("error", STREAM_CUT)
    assert result.error_message == "the stream ended before the final lmi line, after 1 lines"


# ------------------------------------------------------------------------------------- runner wiring


def sagemaker_spec(tmp_path: Path, target: dict[str, Any]) -> BranchSpec:
    data = {
        "name": "sagemaker-test",
        "targets": [{"name": "sm", "platform": "sagemaker", **target}],
        "workload": {
            "bins": [{"min_tokens": 50, "max_tokens": 500}],
            "inference": {"max_new_tokens": OUTPUT_TOKENS},
            "max_prompts_per_bin": 3,
        },
        "load": {"concurrency": [2], "requests_per_level": 4, "request_timeout_s": 5},
    }
    (spec,) = plan_suite(validate_suite_data(data), storage_root=str(tmp_path), run_id="run-1").branches
    return spec


def test_make_client_builds_a_sagemaker_client_from_the_target(tmp_path: Path) -> None:
    spec = sagemaker_spec(
        tmp_path,
        {
            "endpoint_name": "my-endpoint",
            "payload_format": "vllm-openai",
            "model": "llama",
            "region": "eu-west-1",
            "endpoint_url": "http://127.0.0.1:9",
        },
    )
    client = make_client(spec)
    assert isinstance(client, SageMakerClient)
    assert (client.endpoint_name, client.region, client.endpoint_url) == (
        "my-endpoint",
        "eu-west-1",
        "http://127.0.0.1:9",
    )
    assert isinstance(client.payload, VllmOpenAIFormat) and client.payload.model == "llama"
    assert client.max_connections == 2
    override = make_client(spec, endpoint_url="http://127.0.0.1:10")
    assert isinstance(override, SageMakerClient) and override.endpoint_url == "http://127.0.0.1:10"


def test_a_deployed_endpoint_is_called_by_the_name_the_plan_derived(tmp_path: Path) -> None:
    from fmbench.deployment import resource_names

    spec = sagemaker_spec(
        tmp_path,
        {"model_source": {"hf_model_id": "org/model"}, "instance_type": "ml.g5.2xlarge", "container": "lmi"},
    )
    client = make_client(spec)
    assert isinstance(client, SageMakerClient)
    assert client.endpoint_name == resource_names("run-1", spec.branch_id).endpoint
    assert client.endpoint_name.startswith("fmb-")
    with pytest.raises(BranchSetupError, match="no endpoint to call"):
        make_client(spec.model_copy(update={"sagemaker_endpoint_name": None}))


async def test_a_sagemaker_branch_writes_records_with_server_token_counts(tmp_path: Path) -> None:
    async with emulator("tgi") as url:
        spec = sagemaker_spec(
            tmp_path, {"endpoint_name": "my-endpoint", "payload_format": "tgi", "endpoint_url": url}
        )
        outcome = await run_branch(spec)
    assert (outcome.status, outcome.reason, outcome.records_written) == ("succeeded", None, 4)
    rows = ds.dataset(tmp_path / "records", format="parquet", partitioning="hive").to_table().to_pylist()
    assert len(rows) == 4
    assert statistics.median(row["ttft_s"] for row in rows) == pytest.approx(TTFT_MS / 1000, abs=0.015)
    for row in rows:
        assert (row["status"], row["platform"], row["http_status"]) == ("ok", "sagemaker", 200)
        assert (row["token_source"], row["completion_tokens"], len(row["itl_s"])) == (
            "server",
            OUTPUT_TOKENS,
            5,
        )
