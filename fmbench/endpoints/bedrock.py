"""Client for Amazon Bedrock models through the Converse API (Converse, and ConverseStream to stream)."""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from typing_extensions import Unpack

from fmbench.config import InferenceParameters
from fmbench.endpoints.aws import (
    AwsClientOptions,
    AwsRuntimeClient,
    MalformedEventError,
    record_failure,
)
from fmbench.endpoints.base import (
    CLIENT_ERROR,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    InvocationResult,
    sending,
)


class BedrockClient(AwsRuntimeClient):
    """Converse is the one Bedrock API every text model shares, so one request shape fits all of them.

    Streaming: TTFT is the first ``contentBlockDelta`` with text; the answer is complete at
    ``messageStop``; token counts come from the ``metadata`` event that follows it (``usage`` of the
    Converse answer when not streaming).
    """

    service_name = "bedrock-runtime"
    bearer_token_env = "AWS_BEARER_TOKEN_BEDROCK"

    def __init__(
        self,
        model_id: str,
        **options: Unpack[AwsClientOptions],
    ) -> None:
        super().__init__(**options)
        self.model_id = model_id

    def request(
        self, prompt_text: str, params: InferenceParameters, messages: list[dict[str, str]] | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of Converse and ConverseStream (the same for both).

        Converse takes a system prompt apart from the conversation, so system messages go there.
        """
        inference: dict[str, Any] = {"maxTokens": params.max_new_tokens, "temperature": params.temperature}
        if params.top_p is not None:
            inference["topP"] = params.top_p
        turns = messages if messages is not None else [{"role": "user", "content": prompt_text}]
        request: dict[str, Any] = {
            "modelId": self.model_id,
            "messages": [
                {"role": m["role"], "content": [{"text": m["content"]}]}
                for m in turns
                if m["role"] != "system"
            ],
            "inferenceConfig": inference,
        }
        system = [{"text": m["content"]} for m in turns if m["role"] == "system"]
        if system:
            request["system"] = system
        return request

    async def invoke(
        self,
        prompt_text: str,
        params: InferenceParameters,
        timeout_s: float,
        *,
        messages: list[dict[str, str]] | None = None,
    ) -> InvocationResult:
        """One request, bounded as a whole by ``timeout_s``; never raises (only cancellation propagates)."""
        request = self.request(prompt_text, params, messages)
        pieces: list[str] = []
        try:
            client = await self._get_client()
        except Exception as exc:  # noqa: BLE001 - no region, a broken config: every request becomes a record
            now_s = perf_counter()
            failed = InvocationResult(send_perf_s=now_s, end_perf_s=now_s)
            failed.fail(CLIENT_ERROR, f"cannot create the AWS client: {type(exc).__name__}: {exc}")
            return failed
        # Until the SDK hands the signed request to its HTTP session, the send time is the call's.
        result = InvocationResult(send_perf_s=perf_counter())
        with sending(result):
            try:
                async with asyncio.timeout(timeout_s):
                    if params.stream:
                        await self._converse_stream(client, request, result, pieces)
                    else:
                        await self._converse(client, request, result, pieces)
            except Exception as exc:  # noqa: BLE001 - every failure must become a record, never a lost request
                record_failure(result, exc, timeout_s)
            finally:
                result.settle(pieces, streamed=params.stream)
        return result

    async def _converse_stream(
        self, client: Any, request: dict[str, Any], result: InvocationResult, pieces: list[str]
    ) -> None:
        response = await client.converse_stream(**request)
        result.http_status = response["ResponseMetadata"]["HTTPStatusCode"]
        stream = response["stream"]
        chunk_perf_s = result.chunk_perf_s
        events = 0
        stopped = False
        try:
            async for event in stream:
                now_s = perf_counter()
                events += 1
                block_delta = event.get("contentBlockDelta")
                if block_delta is not None:  # the hot path: one per token (or per few tokens)
                    delta = block_delta.get("delta")
                    if not isinstance(delta, dict):
                        raise MalformedEventError("a contentBlockDelta event without its delta")
                    text = delta.get("text")
                    if text:
                        chunk_perf_s.append(now_s)
                        pieces.append(text)
                elif "messageStop" in event:
                    stopped = True
                    result.end_perf_s = now_s
                elif "metadata" in event:
                    usage = event["metadata"].get("usage") or {}
                    _take_usage(result, usage)
                    if stopped:
                        result.end_perf_s = now_s
        finally:
            stream.close()  # after a complete read this is a no-op; otherwise it drops a half-read connection
        if not stopped:
            if events == 0:
                result.fail(MALFORMED_RESPONSE, "the stream had no events")
            else:
                result.fail(STREAM_CUT, f"the stream ended without messageStop, after {events} events")

    async def _converse(
        self, client: Any, request: dict[str, Any], result: InvocationResult, pieces: list[str]
    ) -> None:
        response = await client.converse(**request)
        end_perf_s = perf_counter()
        result.http_status = response["ResponseMetadata"]["HTTPStatusCode"]
        output = response.get("output")
        message = output.get("message") if isinstance(output, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
            raise MalformedEventError("the Converse answer has no output.message.content list")
        pieces.extend(block["text"] for block in content if block.get("text"))
        _take_usage(result, response.get("usage") or {})
        result.end_perf_s = end_perf_s


def _take_usage(result: InvocationResult, usage: Any) -> None:
    input_tokens = usage.get("inputTokens")
    output_tokens = usage.get("outputTokens")
    if isinstance(input_tokens, int):
        result.usage_prompt_tokens = input_tokens
    if isinstance(output_tokens, int):
        result.usage_completion_tokens = output_tokens
