"""Client for SageMaker real-time endpoints: InvokeEndpoint and InvokeEndpointWithResponseStream."""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from typing_extensions import Unpack

from fmbench.config import InferenceParameters
from fmbench.endpoints.aws import (
    AwsClientOptions,
    AwsRuntimeClient,
    record_failure,
)
from fmbench.endpoints.base import (
    CLIENT_ERROR,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    InvocationResult,
    sending,
)
from fmbench.endpoints.formats import GenerationFailedError, PayloadFormat, StreamDecoder

_CONTENT_TYPE = "application/json"


class SageMakerClient(AwsRuntimeClient):
    """Speaks the SageMaker runtime API; what goes inside the body is the ``payload`` format's business.

    Streaming: the event stream's ``PayloadPart`` events carry the container's bytes, which the format's
    decoder splits into lines. TTFT is the arrival of the first part that completes a line with text.
    """

    service_name = "sagemaker-runtime"

    def __init__(
        self,
        endpoint_name: str,
        payload: PayloadFormat,
        **options: Unpack[AwsClientOptions],
    ) -> None:
        super().__init__(**options)
        self.endpoint_name = endpoint_name
        self.payload = payload

    async def invoke(
        self,
        prompt_text: str,
        params: InferenceParameters,
        timeout_s: float,
        *,
        messages: list[dict[str, str]] | None = None,
    ) -> InvocationResult:
        """One request, bounded as a whole by ``timeout_s``; never raises (only cancellation propagates).

        The container formats take one text, so ``messages`` is not sent: the prompt's text is.

        ``end_perf_s`` is set once the answer is complete, so a failure after that (the connection dropped
        while the body's last bytes drain) cannot turn a complete answer into an error.
        """
        body = self.payload.request_body(prompt_text, params)
        pieces: list[str] = []
        decoder = self.payload.stream_decoder() if params.stream else None
        try:
            client = await self._get_client()
        except Exception as exc:  # noqa: BLE001 - no region, a broken config: every request becomes a record
            return _failed_before_sending(exc)
        # Until the SDK hands the signed request to its HTTP session, the send time is the call's.
        result = InvocationResult(send_perf_s=perf_counter())
        with sending(result):
            try:
                async with asyncio.timeout(timeout_s):
                    if decoder is not None:
                        await self._invoke_streaming(client, body, decoder, result, pieces)
                    else:
                        await self._invoke_once(client, body, result, pieces)
            except GenerationFailedError as exc:
                # As for OpenAI endpoints: an error event ends a started stream early; an error inside a 200
                # answer is not the answer the format promises.
                error_class = STREAM_CUT if decoder is not None else MALFORMED_RESPONSE
                result.fail(error_class, f"the container reported an error: {exc}")
            except Exception as exc:  # noqa: BLE001 - every failure must become a record, never a lost request
                record_failure(result, exc, timeout_s)
            finally:
                result.settle(pieces, streamed=decoder is not None)
                if decoder is not None:
                    result.usage_prompt_tokens = decoder.prompt_tokens
                    result.usage_completion_tokens = decoder.completion_tokens
        return result

    async def _invoke_streaming(
        self,
        client: Any,
        body: bytes,
        decoder: StreamDecoder,
        result: InvocationResult,
        pieces: list[str],
    ) -> None:
        response = await client.invoke_endpoint_with_response_stream(
            EndpointName=self.endpoint_name, Body=body, ContentType=_CONTENT_TYPE
        )
        result.http_status = response["ResponseMetadata"]["HTTPStatusCode"]
        stream = response["Body"]
        chunk_perf_s = result.chunk_perf_s
        try:
            # The hot path: per part, one perf_counter reading, then one float and one text append per line.
            async for event in stream:
                now_s = perf_counter()
                part = event.get("PayloadPart")
                if part is None:
                    continue  # error events are raised by botocore; unknown event types are skipped
                for piece in decoder.feed(part.get("Bytes", b"")):
                    chunk_perf_s.append(now_s)
                    pieces.append(piece)
                if decoder.complete:
                    result.end_perf_s = now_s
            # Read to the end (never break early), so aiohttp returns the connection to the pool.
            now_s = perf_counter()
            for piece in decoder.finish():
                chunk_perf_s.append(now_s)
                pieces.append(piece)
        finally:
            stream.close()  # after a complete read this is a no-op; otherwise it drops a half-read connection
        if decoder.complete:
            result.end_perf_s = result.end_perf_s or now_s
        elif not decoder.has_end_marker:
            if decoder.data_lines and not pieces:
                # Most likely a text path that fits the container's whole answer but not its stream lines.
                result.fail(
                    MALFORMED_RESPONSE,
                    f"none of the {decoder.data_lines} streamed lines had text at the response_text_path",
                )
            else:
                result.end_perf_s = now_s  # a format without an end marker is complete when the stream ends
        elif decoder.data_lines == 0:
            result.fail(MALFORMED_RESPONSE, f"the stream had no {self.payload.name} lines")
        else:
            result.fail(
                STREAM_CUT,
                f"the stream ended before the final {self.payload.name} line, "
                f"after {decoder.data_lines} lines",
            )

    async def _invoke_once(
        self, client: Any, body: bytes, result: InvocationResult, pieces: list[str]
    ) -> None:
        response = await client.invoke_endpoint(
            EndpointName=self.endpoint_name, Body=body, ContentType=_CONTENT_TYPE
        )
        result.http_status = response["ResponseMetadata"]["HTTPStatusCode"]
        async with response["Body"] as stream:
            raw = await stream.read()
        end_perf_s = perf_counter()
        parsed = self.payload.parse_response(raw)
        if parsed.text:
            pieces.append(parsed.text)
        result.usage_prompt_tokens = parsed.prompt_tokens
        result.usage_completion_tokens = parsed.completion_tokens
        result.end_perf_s = end_perf_s


def _failed_before_sending(exc: Exception) -> InvocationResult:
    now_s = perf_counter()
    result = InvocationResult(send_perf_s=now_s, end_perf_s=now_s)
    result.fail(CLIENT_ERROR, f"cannot create the AWS client: {type(exc).__name__}: {exc}")
    return result
