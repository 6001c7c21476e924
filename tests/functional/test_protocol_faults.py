"""The same fault makes the same record whatever the wire protocol.

Each client (OpenAI HTTP, SageMaker runtime, Bedrock Converse) is sent one request against the emulator
with one fault at a rate of 1, or against a closed port. What differs between the protocols (the HTTP
status SageMaker gives a container's error, each service's wording) is in ``WIRES``; the error class, what
of the answer is kept and that the client sent exactly one request are the same for all.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import pytest

from fmbench.config import InferenceParameters
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints import EndpointClient, InvocationResult
from fmbench.endpoints import base as error_class  # the error classes every protocol shares
from fmbench.endpoints.bedrock import BedrockClient
from fmbench.endpoints.formats import LmiFormat
from fmbench.endpoints.openai import OpenAIClient
from fmbench.endpoints.sagemaker import SageMakerClient

if TYPE_CHECKING:
    from conftest import EmulatorHealth  # the fixture's type (tests/functional/conftest.py)

OUTPUT_TOKENS = 6
PROMPT = "What is the capital of France?"
STREAM = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=True)
ONCE = InferenceParameters(max_new_tokens=OUTPUT_TOKENS, stream=False)
# The emulator's answer is these words; a cut stream or a malformed event comes after the first half.
FIRST_HALF = ["the", "of", "and"]


@dataclass(frozen=True)
class Wire:
    client: Callable[[str], EndpointClient]  # a client of the service at this base URL
    probed_url: Callable[[str], str]  # the URL a failed probe names, from the base URL
    server_error: tuple[int, str]  # the emulated 500: the status the client records, its message's start
    throttled: str  # the start of the emulated 429's message


WIRES: dict[str, Wire] = {
    "openai": Wire(
        client=lambda url: OpenAIClient(url + "/v1", max_connections=2),
        probed_url=lambda url: url + "/v1/models",
        server_error=(500, "HTTP 500: emulated internal server error"),
        throttled="HTTP 429: emulated rate limit",
    ),
    "sagemaker": Wire(
        client=lambda url: SageMakerClient("my-endpoint", LmiFormat(), endpoint_url=url, max_connections=2),
        probed_url=lambda url: url,
        # InvokeEndpoint wraps a container's error in ModelError, HTTP 424, with the container's status
        server_error=(424, "ModelError (container status 500): Received server error (500)"),
        throttled="ThrottlingException: emulated throttling: rate exceeded",
    ),
    "bedrock": Wire(
        client=lambda url: BedrockClient(
            "anthropic.claude-3-haiku-20240307-v1:0", endpoint_url=url, max_connections=2
        ),
        probed_url=lambda url: url,
        server_error=(500, "InternalServerException: emulated internal server error"),
        throttled="ThrottlingException: Too many requests",
    ),
}


@pytest.fixture(autouse=True)
def aws_credentials(offline_aws_credentials: None) -> None:
    """The AWS clients sign with dummy credentials (see conftest.offline_aws_credentials)."""


@pytest.fixture(params=list(WIRES))
def wire(request: pytest.FixtureRequest) -> Wire:
    return WIRES[request.param]


@pytest.fixture
def invoke(wire: Wire, emulator_health: EmulatorHealth) -> Callable[..., Any]:
    async def invoke(
        params: InferenceParameters, timeout_s: float = 5.0, **faults: float
    ) -> tuple[InvocationResult, int]:
        """One request against an emulator with these faults, after the probe that warms the client's pool
        (as the runner's does); the result and how many requests the emulator received."""
        settings = EmulatorSettings(ttft_ms=40, itl_ms=8, output_tokens=OUTPUT_TOKENS, **faults)
        async with running_emulator(settings) as url:
            async with wire.client(url) as client:
                assert await client.probe(2.0) is None
                result = await client.invoke(PROMPT, params, timeout_s)
            served = await emulator_health(url)
        return result, served["requests_total"]

    return invoke


def observed(result: InvocationResult) -> tuple[str, str | None, int | None]:
    return result.status, result.error_class, result.http_status


@pytest.mark.parametrize("params", [STREAM, ONCE], ids=["stream", "once"])
async def test_a_server_error_is_http_5xx_with_the_services_message(
    wire: Wire, invoke: Callable[..., Any], params: InferenceParameters
) -> None:
    result, requests = await invoke(params, error_500_rate=1.0)
    status, message = wire.server_error
    assert observed(result) == ("error", error_class.HTTP_5XX, status)
    assert result.error_message is not None and result.error_message.startswith(message)
    assert requests == 1  # recorded as it came: no retry hides it


@pytest.mark.parametrize("params", [STREAM, ONCE], ids=["stream", "once"])
async def test_throttling_is_http_429_and_not_retried_by_the_client(
    wire: Wire, invoke: Callable[..., Any], params: InferenceParameters
) -> None:
    result, requests = await invoke(params, error_429_rate=1.0)
    assert observed(result) == ("error", error_class.HTTP_429, 429)
    assert result.error_message is not None and result.error_message.startswith(wire.throttled)
    assert requests == 1  # the SDKs retry throttling by default; a benchmark must see each 429


async def test_a_hung_answer_times_out_at_the_request_timeout(invoke: Callable[..., Any]) -> None:
    started_s = perf_counter()
    result, _ = await invoke(STREAM, timeout_s=0.3, hang_rate=1.0)
    elapsed_s = perf_counter() - started_s
    assert observed(result) == ("error", error_class.TIMEOUT, None)
    assert result.error_message == "no complete response within 0.3 s"
    assert result.end_perf_s - result.send_perf_s == pytest.approx(0.3, abs=0.1)
    assert elapsed_s < 0.3 + 1.0  # emulator start, probe and stop included: not held past the timeout


async def test_a_cut_stream_keeps_what_arrived_and_says_stream_cut(invoke: Callable[..., Any]) -> None:
    result, _ = await invoke(STREAM, cut_stream_rate=1.0)
    assert observed(result) == ("error", error_class.STREAM_CUT, 200)
    assert result.error_message is not None and result.error_message.startswith("connection lost mid-answer")
    assert result.text.split() == FIRST_HALF
    assert len(result.chunk_perf_s) == len(FIRST_HALF) and result.first_token_perf_s is not None


async def test_a_connection_cut_before_a_whole_answer_is_also_stream_cut(invoke: Callable[..., Any]) -> None:
    """The server closing mid-answer is one class whether the answer was to stream or not: the emulator
    closes a non-streamed answer before its status line, so no status and no text are kept."""
    result, requests = await invoke(ONCE, cut_stream_rate=1.0)
    assert observed(result) == ("error", error_class.STREAM_CUT, None)
    assert result.error_message is not None
    assert result.error_message.startswith("connection lost before the answer")
    assert result.text == "" and requests == 1


@pytest.mark.parametrize("params", [STREAM, ONCE], ids=["stream", "once"])
async def test_a_malformed_answer_is_a_malformed_response(
    invoke: Callable[..., Any], params: InferenceParameters
) -> None:
    result, _ = await invoke(params, malformed_event_rate=1.0)
    assert observed(result) == ("error", error_class.MALFORMED_RESPONSE, 200)
    assert result.error_message  # what could not be read, for the record
    # A stream keeps the tokens before the bad event; an answer in one piece has none to keep.
    assert result.text.split() == (FIRST_HALF if params.stream else [])


async def test_a_closed_port_is_a_connection_error_and_fails_the_probe(wire: Wire) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed once the block ends
    async with wire.client(url) as client:
        result = await client.invoke(PROMPT, STREAM, 5.0)
        reason = await client.probe(1.0)
    assert observed(result) == ("error", error_class.CONNECTION_ERROR, None)
    assert reason is not None and reason.startswith(f"cannot connect to {wire.probed_url(url)}")
