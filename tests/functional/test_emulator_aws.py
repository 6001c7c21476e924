"""The emulator's SageMaker and Bedrock routes, read by plain boto3 clients exactly as they read AWS."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch
from botocore.exceptions import ClientError
from pydantic import ValidationError

from fmbench.config import EmulatorOptions, InferenceParameters
from fmbench.emulator.cli import build_parser, settings_from_args
from fmbench.emulator.process import EmulatorProcess
from fmbench.emulator.server import running_emulator
from fmbench.emulator.settings import EmulatorSettings
from fmbench.endpoints.base import MALFORMED_RESPONSE
from fmbench.endpoints.openai import OpenAIClient

PROMPT = "What is the capital of France?"  # 7 tokens for the emulator's simple tokenizer
TOKENS = [" the", " of", " and", " to", " in", " is"]  # the emulator's first six words
ANSWER = "".join(TOKENS)
FAST = {"ttft_ms": 5, "itl_ms": 1, "output_tokens": len(TOKENS)}
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})
T = TypeVar("T")


@pytest.fixture(autouse=True)
def aws_credentials(offline_aws_credentials: None) -> None:
    """Every test here runs offline (see conftest.offline_aws_credentials)."""


def emulator(**settings: Any) -> Any:
    return running_emulator(EmulatorSettings(**{**FAST, **settings}))


@functools.cache
def boto3_session() -> boto3.session.Session:
    """One session for the module, so that the service models are loaded once, not per client."""
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )


def sagemaker(url: str) -> Any:
    return boto3_session().client("sagemaker-runtime", endpoint_url=url, config=NO_RETRIES)


def bedrock(url: str) -> Any:
    return boto3_session().client("bedrock-runtime", endpoint_url=url, config=NO_RETRIES)


async def in_thread(work: Callable[[], T]) -> T:
    """boto3 blocks; the emulator serves on this event loop, so the client runs beside it in a thread."""
    return await asyncio.to_thread(work)


def tgi_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"inputs": PROMPT, "parameters": {"max_new_tokens": 20, "details": True}}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def chat_body(stream: bool) -> bytes:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 20,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def stream_bytes(response: dict[str, Any]) -> bytes:
    events = list(response["Body"])
    assert all(set(event) == {"PayloadPart"} for event in events)
    return b"".join(event["PayloadPart"]["Bytes"] for event in events)


# ------------------------------------------------------------------------------------------ SageMaker


async def test_lmi_stream_is_json_lines_in_payload_parts() -> None:
    async with emulator(sagemaker_format="lmi") as url:
        response = await in_thread(
            lambda: sagemaker(url).invoke_endpoint_with_response_stream(
                EndpointName="my-endpoint", Body=tgi_body(stream=True), ContentType="application/json"
            )
        )
        raw = await in_thread(lambda: stream_bytes(response))
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "application/jsonlines"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["token"]["text"] for line in lines] == TOKENS
    assert all(set(line) == {"token"} for line in lines[:-1])
    assert lines[-1]["generated_text"] == ANSWER
    assert lines[-1]["details"] == {"finish_reason": "eos_token", "generated_tokens": 6, "inputs": PROMPT}


async def test_tgi_stream_is_server_sent_events_with_input_length() -> None:
    async with emulator(sagemaker_format="tgi") as url:
        response = await in_thread(
            lambda: sagemaker(url).invoke_endpoint_with_response_stream(
                EndpointName="my-endpoint", Body=tgi_body(stream=True)
            )
        )
        raw = await in_thread(lambda: stream_bytes(response))
    assert response["ContentType"] == "text/event-stream"
    events = [json.loads(block.removeprefix(b"data:")) for block in raw.split(b"\n\n") if block]
    assert [event["token"]["text"] for event in events] == TOKENS
    assert [event["generated_text"] for event in events] == [None] * 5 + [ANSWER]
    assert events[-1]["details"] == {
        "finish_reason": "eos_token",
        "generated_tokens": 6,
        "input_length": 7,
        "seed": None,
    }


async def test_openai_chat_bodies_get_openai_chunks_whatever_the_format_setting() -> None:
    async with emulator(sagemaker_format="tgi") as url:
        response = await in_thread(
            lambda: sagemaker(url).invoke_endpoint_with_response_stream(
                EndpointName="my-endpoint", Body=chat_body(stream=True)
            )
        )
        raw = await in_thread(lambda: stream_bytes(response))
    blocks = [block.removeprefix(b"data: ") for block in raw.split(b"\n\n") if block]
    assert blocks[-1] == b"[DONE]"
    chunks = [json.loads(block) for block in blocks[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == ANSWER
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 6, "total_tokens": 13}


@pytest.mark.parametrize(
    ("sagemaker_format", "body", "expected"),
    [
        ("lmi", tgi_body(False), {"generated_text": ANSWER, "details": {"finish_reason": "eos_token"}}),
        ("tgi", tgi_body(False), [{"generated_text": ANSWER, "details": {"generated_tokens": 6}}]),
    ],
)
async def test_invoke_endpoint_answers_in_the_container_style(
    sagemaker_format: str, body: bytes, expected: Any
) -> None:
    async with emulator(sagemaker_format=sagemaker_format) as url:
        response = await in_thread(
            lambda: sagemaker(url).invoke_endpoint(
                EndpointName="ep", Body=body, ContentType="application/json"
            )
        )
        answer = json.loads(await in_thread(response["Body"].read))
    assert response["ContentType"].startswith("application/json")
    first = answer[0] if isinstance(answer, list) else answer
    first_expected = expected[0] if isinstance(expected, list) else expected
    assert isinstance(answer, list) == isinstance(expected, list)
    assert first["generated_text"] == first_expected["generated_text"]
    assert first_expected["details"].items() <= first["details"].items()


async def test_invoke_endpoint_with_an_openai_body_answers_a_chat_completion() -> None:
    async with emulator() as url:
        response = await in_thread(
            lambda: sagemaker(url).invoke_endpoint(EndpointName="ep", Body=chat_body(False))
        )
        answer = json.loads(await in_thread(response["Body"].read))
    assert answer["choices"][0]["message"]["content"] == ANSWER
    assert answer["usage"]["completion_tokens"] == 6


async def test_a_container_error_is_a_model_error_with_the_container_status() -> None:
    async with emulator(error_500_rate=1.0) as url:
        client = await in_thread(lambda: sagemaker(url))
        with pytest.raises(client.exceptions.ModelError) as caught:
            await in_thread(lambda: client.invoke_endpoint(EndpointName="ep", Body=tgi_body(False)))
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert (response["OriginalStatusCode"], response["OriginalMessage"]) == (
        500,
        "emulated internal server error",
    )


async def test_throttling_is_a_throttling_exception_and_is_not_retried() -> None:
    async with emulator(error_429_rate=1.0) as url:
        client = await in_thread(lambda: sagemaker(url))
        with pytest.raises(ClientError) as caught:
            await in_thread(
                lambda: client.invoke_endpoint_with_response_stream(EndpointName="ep", Body=tgi_body(True))
            )
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


@pytest.mark.parametrize(
    ("sagemaker_format", "body", "container_status"),
    [
        ("lmi", b"not json", 400),
        ("tgi", b'{"inputs": 3}', 422),
        ("vllm", tgi_body(False), 400),  # a container that only serves the OpenAI API
    ],
)
async def test_bodies_the_container_refuses_are_model_errors(
    sagemaker_format: str, body: bytes, container_status: int
) -> None:
    async with emulator(sagemaker_format=sagemaker_format) as url:
        client = await in_thread(lambda: sagemaker(url))
        with pytest.raises(client.exceptions.ModelError) as caught:
            await in_thread(lambda: client.invoke_endpoint(EndpointName="ep", Body=body))
    assert caught.value.response["OriginalStatusCode"] == container_status


async def test_a_malformed_sagemaker_event_is_a_line_that_is_not_json() -> None:
    async with emulator(malformed_event_rate=1.0) as url:
        response = await in_thread(
            lambda: sagemaker(url).invoke_endpoint_with_response_stream(
                EndpointName="ep", Body=tgi_body(True)
            )
        )
        raw = await in_thread(lambda: stream_bytes(response))
    lines = raw.splitlines()
    assert len(lines) == 7
    with pytest.raises(ValueError):
        json.loads(lines[3])


# ------------------------------------------------------------------------------------------- Bedrock


def converse_args(model_id: str = "anthropic.claude-3-haiku-20240307-v1:0") -> dict[str, Any]:
    return {
        "modelId": model_id,
        "messages": [{"role": "user", "content": [{"text": PROMPT}]}],
        "inferenceConfig": {"maxTokens": 20, "temperature": 0.5},
    }


async def test_converse_stream_events_arrive_in_the_documented_order() -> None:
    async with emulator() as url:
        response = await in_thread(lambda: bedrock(url).converse_stream(**converse_args()))
        events = await in_thread(lambda: list(response["stream"]))
    assert [next(iter(event)) for event in events] == [
        "messageStart",
        *["contentBlockDelta"] * 6,
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert events[0]["messageStart"] == {"role": "assistant"}
    assert [e["contentBlockDelta"]["delta"]["text"] for e in events[1:7]] == TOKENS
    assert events[8]["messageStop"] == {"stopReason": "end_turn"}
    assert events[9]["metadata"]["usage"] == {"inputTokens": 7, "outputTokens": 6, "totalTokens": 13}
    assert events[9]["metadata"]["metrics"]["latencyMs"] >= 5


async def test_converse_answers_with_text_usage_and_an_arn_model_id() -> None:
    model_arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-v1:0"
    args = converse_args(model_arn)
    args["inferenceConfig"]["maxTokens"] = 4
    async with emulator() as url:
        response = await in_thread(lambda: bedrock(url).converse(**args))
    assert response["output"]["message"] == {"role": "assistant", "content": [{"text": "".join(TOKENS[:4])}]}
    assert response["stopReason"] == "max_tokens"
    assert response["usage"] == {"inputTokens": 7, "outputTokens": 4, "totalTokens": 11}


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [("error_500_rate", "InternalServerException", 500), ("error_429_rate", "ThrottlingException", 429)],
)
async def test_bedrock_faults_raise_the_modelled_exceptions(fault: str, code: str, status: int) -> None:
    async with emulator(**{fault: 1.0}) as url:
        client = await in_thread(lambda: bedrock(url))
        with pytest.raises(getattr(client.exceptions, code)) as caught:
            await in_thread(lambda: client.converse_stream(**converse_args()))
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


async def test_invalid_converse_requests_are_validation_exceptions() -> None:
    async with emulator() as url:
        client = await in_thread(lambda: bedrock(url))
        with pytest.raises(client.exceptions.ValidationException, match="at least one content block"):
            await in_thread(lambda: client.converse(modelId="m", messages=[{"role": "user", "content": []}]))


async def test_a_malformed_bedrock_event_fails_botocore_s_checksum() -> None:
    async with emulator(malformed_event_rate=1.0) as url:
        response = await in_thread(lambda: bedrock(url).converse_stream(**converse_args()))
        with pytest.raises(ChecksumMismatch):
            await in_thread(lambda: list(response["stream"]))


# ---------------------------------------------------------------------- the new knobs, on every protocol


async def test_malformed_answers_on_the_openai_api_are_malformed_responses() -> None:
    async with (
        emulator(malformed_event_rate=1.0) as url,
        OpenAIClient(url + "/v1", max_connections=2) as client,
    ):
        streamed = await client.invoke(PROMPT, InferenceParameters(max_new_tokens=20, stream=True), 5.0)
        once = await client.invoke(PROMPT, InferenceParameters(max_new_tokens=20, stream=False), 5.0)
    assert (streamed.status, streamed.error_class, streamed.http_status) == ("error", MALFORMED_RESPONSE, 200)
    assert len(streamed.chunk_perf_s) == 3  # the tokens before the bad line count
    assert (once.status, once.error_class, once.http_status) == ("error", MALFORMED_RESPONSE, 200)


def test_the_malformed_rate_shares_the_unit_interval_with_the_other_faults() -> None:
    with pytest.raises(ValidationError, match="at most 1"):
        EmulatorSettings(cut_stream_rate=0.6, malformed_event_rate=0.6)
    with pytest.raises(ValidationError, match="at most 1"):
        EmulatorOptions(hang_rate=0.5, malformed_event_rate=0.6)
    assert EmulatorOptions(malformed_event_rate=0.25).malformed_event_rate == 0.25


def test_the_child_process_settings_carry_the_aws_settings() -> None:
    settings = EmulatorSettings(malformed_event_rate=0.125, sagemaker_format="tgi")
    parsed = settings_from_args(build_parser().parse_args(EmulatorProcess(settings).settings_argv))
    assert parsed == settings
    assert parsed.sagemaker_format == "tgi"
