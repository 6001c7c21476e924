"""SageMaker runtime and Bedrock Converse routes of the emulator, served on the OpenAI API's port.

The routes are the real APIs' paths, so botocore clients pointed at the emulator (``endpoint_url``) sign,
send and parse exactly as they would against AWS: answers, AWS error shapes (``x-amzn-ErrorType``) and
event streams framed by ``eventstream``. Timing, the batching engine and the faults are the emulator's.

- SageMaker ``POST /endpoints/{name}/invocations`` and ``.../invocations-response-stream``: the body is
  passed to an emulated container, whose dialect follows the body (OpenAI chat -> vLLM-style answers;
  ``{inputs, parameters}`` -> LMI or TGI style per ``sagemaker_format``). Streamed container output
  travels in ``PayloadPart`` events; tokens that are due together share one part.
- Bedrock ``POST /model/{modelId}/converse`` and ``.../converse-stream``: messageStart, one
  contentBlockDelta per token, contentBlockStop, messageStop, metadata (usage and metrics).
- Bedrock ``POST /model/{modelId}/invoke`` (InvokeModel) for Titan text embeddings models only
  (``embeddings``): answered at once; a model of ``unavailable_models`` gets AccessDeniedException (403),
  any other model ValidationException (400). Of the faults, error_500, error_429 and malformed (a
  truncated body) apply to it.

Faults: error_500 -> SageMaker ModelError (HTTP 424, container status 500) / Bedrock
InternalServerException; error_429 -> ThrottlingException (HTTP 429); hang; cut_stream (the connection
drops half-way); malformed -> one unparsable event half-way (SageMaker: a container line that is not JSON;
Bedrock: a frame with a bad CRC) or, when not streaming, a truncated body.
"""

from __future__ import annotations

import abc
import json
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from fmbench.emulator import eventstream
from fmbench.emulator.embeddings import (
    EmbeddingsRequestError,
    embeddings_answer,
    parse_embeddings_request,
    titan_generation,
)
from fmbench.emulator.generation import Build, Dialect, RejectedRequestError, serve
from fmbench.emulator.protocol import (
    DONE_EVENT,
    MALFORMED_SSE_EVENT,
    InvalidRequestError,
    ParsedRequest,
    ResponseWriter,
    answer_token,
    parse_request,
)
from fmbench.emulator.state import STATE_KEY, EmulatorState, Fault
from fmbench.tokenizer import get_tokenizer

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_MAX_NEW_TOKENS_LIMIT = 1_000_000
_LOG_PROB = -0.25
_TOKEN_ID_BASE = 1000
_LOG_GROUP_ARN_PREFIX = "arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints"


def _aws_error(status: int, error_type: str, body: dict[str, Any]) -> web.Response:
    """The AWS REST-JSON error shape: botocore takes the code from ``x-amzn-ErrorType``."""
    headers = {"x-amzn-ErrorType": error_type, "x-amzn-RequestId": str(uuid.uuid4())}
    return web.json_response(body, status=status, headers=headers)


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data:" + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _json_bytes(payload: dict[str, Any] | list[Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _json_line(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def _answer_text(parsed: ParsedRequest, n_tokens: int) -> str:
    return "".join(answer_token(parsed, i) for i in range(n_tokens))


def _payload_part(data: bytes) -> bytes:
    return eventstream.event_message("PayloadPart", data) if data else b""


# ---------------------------------------------------------------------------------- emulated containers


class _ContainerStyle(abc.ABC):
    """What the serving container behind a SageMaker endpoint writes, streamed or at once."""

    stream_content_type: ClassVar[str]
    malformed_line: ClassVar[bytes]

    def __init__(self, parsed: ParsedRequest) -> None:
        self.parsed = parsed

    @abc.abstractmethod
    def token_lines(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        """Lines of tokens [start, stop); the line of the last token carries the end of the answer."""

    def tail(self, n_tokens: int, finish_reason: str) -> bytes:
        """What follows the last token's line."""
        return b""

    @abc.abstractmethod
    def answer(self, n_tokens: int, finish_reason: str) -> dict[str, Any] | list[Any]:
        """The whole answer when the container does not stream."""

    def streamed_bytes(self, n_tokens: int, finish_reason: str) -> bytes:
        """A streaming answer that InvokeEndpoint (no streaming) collects and returns in one body."""
        return self.token_lines(0, n_tokens, n_tokens, finish_reason) + self.tail(n_tokens, finish_reason)


@dataclass(frozen=True)
class _TextGeneration:
    """An ``{inputs, parameters}`` request, as LMI and TGI read it."""

    inputs: str
    details: bool


class _LmiStyle(_ContainerStyle):
    """DJL LMI rolling batch: JSON lines, the last one with generated_text and details."""

    stream_content_type = "application/jsonlines"
    malformed_line = b'{"token": {"id": 1, "text": \n'

    def __init__(self, parsed: ParsedRequest, request: _TextGeneration) -> None:
        super().__init__(parsed)
        self.request = request

    def _details(self, n_tokens: int, finish_reason: str) -> dict[str, Any]:
        reason = "length" if finish_reason == "length" else "eos_token"
        return {"finish_reason": reason, "generated_tokens": n_tokens, "inputs": self.request.inputs}

    def token_lines(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        lines = []
        for i in range(start, stop):
            line: dict[str, Any] = {
                "token": {
                    "id": _TOKEN_ID_BASE + i,
                    "text": answer_token(self.parsed, i),
                    "log_prob": _LOG_PROB,
                }
            }
            if i == n_tokens - 1:
                line["generated_text"] = _answer_text(self.parsed, n_tokens)
                if self.request.details:
                    line["details"] = self._details(n_tokens, finish_reason)
            lines.append(_json_line(line))
        return b"".join(lines)

    def answer(self, n_tokens: int, finish_reason: str) -> dict[str, Any] | list[Any]:
        answer: dict[str, Any] = {"generated_text": _answer_text(self.parsed, n_tokens)}
        if self.request.details:
            answer["details"] = self._details(n_tokens, finish_reason)
        return answer


class _TgiStyle(_LmiStyle):
    """TGI's compat_generate: server-sent events, and a one-element array when not streaming."""

    stream_content_type = "text/event-stream"
    malformed_line = b'data:{"index": 1, "token": \n\n'

    def _token(self, i: int) -> dict[str, Any]:
        return {
            "id": _TOKEN_ID_BASE + i,
            "text": answer_token(self.parsed, i),
            "logprob": _LOG_PROB,
            "special": False,
        }

    def token_lines(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        events = []
        for i in range(start, stop):
            last = i == n_tokens - 1
            details = None
            if last and self.request.details:
                details = {
                    "finish_reason": "length" if finish_reason == "length" else "eos_token",
                    "generated_tokens": n_tokens,
                    "input_length": self.parsed.prompt_tokens,
                    "seed": None,
                }
            event = {
                "index": i,
                "token": self._token(i),
                "generated_text": _answer_text(self.parsed, n_tokens) if last else None,
                "details": details,
            }
            events.append(_sse(event))
        return b"".join(events)

    def answer(self, n_tokens: int, finish_reason: str) -> dict[str, Any] | list[Any]:
        answer: dict[str, Any] = {"generated_text": _answer_text(self.parsed, n_tokens)}
        if self.request.details:
            answer["details"] = {
                "finish_reason": "length" if finish_reason == "length" else "eos_token",
                "generated_tokens": n_tokens,
                "seed": None,
                "prefill": [],
                "tokens": [self._token(i) for i in range(n_tokens)],
            }
        return [answer]


class _OpenAIStyle(_ContainerStyle):
    """vLLM (or LMI, TGI) serving the OpenAI chat completions API inside the SageMaker body."""

    stream_content_type = "text/event-stream"
    malformed_line = MALFORMED_SSE_EVENT

    def __init__(self, parsed: ParsedRequest, model: str) -> None:
        super().__init__(parsed)
        self.writer = ResponseWriter(parsed, parsed.model or model)

    def token_lines(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        return b"".join(self.writer.token_chunk(i) for i in range(start, stop))

    def tail(self, n_tokens: int, finish_reason: str) -> bytes:
        tail = [self.writer.finish_chunk(finish_reason)]
        if self.parsed.include_usage:
            tail.append(self.writer.usage_chunk(n_tokens))
        tail.append(DONE_EVENT)
        return b"".join(tail)

    def answer(self, n_tokens: int, finish_reason: str) -> dict[str, Any] | list[Any]:
        return self.writer.full_response(n_tokens, finish_reason)


def _text_generation_style(body: dict[str, Any], state: EmulatorState) -> _ContainerStyle:
    settings = state.settings
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise InvalidRequestError("'inputs' must be a string")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidRequestError("'parameters' must be an object")
    max_new_tokens = parameters.get("max_new_tokens")
    if max_new_tokens is not None and (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or not 1 <= max_new_tokens <= _MAX_NEW_TOKENS_LIMIT
    ):
        raise InvalidRequestError(
            f"'max_new_tokens' must be an integer between 1 and {_MAX_NEW_TOKENS_LIMIT}"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean")
    parsed = ParsedRequest(
        kind="completions",
        model=None,
        prompt_tokens=get_tokenizer("simple").count(inputs),
        max_tokens=max_new_tokens,
        stream=stream,
        include_usage=False,
        user_text=inputs,
    )
    parsed = state.scripted(parsed)
    request = _TextGeneration(inputs=inputs, details=bool(parameters.get("details", False)))
    return _TgiStyle(parsed, request) if settings.sagemaker_format == "tgi" else _LmiStyle(parsed, request)


def _container_style(raw: bytes, state: EmulatorState) -> _ContainerStyle:
    """The container dialect the body speaks; InvalidRequestError for a body the container would refuse."""
    settings = state.settings
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    if isinstance(body, dict) and "messages" in body:
        return _OpenAIStyle(state.scripted(parse_request("chat", raw)), settings.model)
    if isinstance(body, dict) and "inputs" in body:
        if settings.sagemaker_format == "vllm":
            raise InvalidRequestError(
                "this container serves the OpenAI chat completions API: send 'messages'"
            )
        return _text_generation_style(body, state)
    raise InvalidRequestError("expected an {inputs, parameters} body or an OpenAI chat completions request")


# ------------------------------------------------------------------------------------------- dialects


class _SageMakerDialect(Dialect):
    def __init__(self, style: _ContainerStyle, endpoint_name: str, streamed: bool) -> None:
        self.style = style
        self.parsed = style.parsed
        self.streamed = streamed  # the route's choice: InvokeEndpointWithResponseStream or InvokeEndpoint
        self.endpoint_name = endpoint_name
        content_type = style.stream_content_type if style.parsed.stream else "application/json"
        common = {"x-Amzn-Invoked-Production-Variant": "AllTraffic", "x-amzn-RequestId": str(uuid.uuid4())}
        self.stream_headers = {
            "Content-Type": EVENTSTREAM_CONTENT_TYPE,
            "X-Amzn-SageMaker-Content-Type": content_type,
            **common,
        }
        self.answer_headers = common

    def error(self, fault: Fault) -> web.Response:
        if fault is Fault.ERROR_429:
            return _aws_error(429, "ThrottlingException", {"message": "emulated throttling: rate exceeded"})
        return model_error(self.endpoint_name, 500, "emulated internal server error")

    def unavailable(self) -> web.Response:
        return _aws_error(503, "ServiceUnavailable", {"message": "the emulator is shutting down"})

    def body(self, n_tokens: int, finish_reason: str, latency_ms: int) -> tuple[bytes, str]:
        if self.parsed.stream:
            return self.style.streamed_bytes(n_tokens, finish_reason), self.style.stream_content_type
        return _json_bytes(self.style.answer(n_tokens, finish_reason)), "application/json"

    def token_frames(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        if not self.parsed.stream:
            return b""  # the container answers at once; SageMaker passes that on at the end
        return _payload_part(self.style.token_lines(start, stop, n_tokens, finish_reason))

    def end_frames(self, n_tokens: int, finish_reason: str, latency_ms: int) -> bytes:
        if self.parsed.stream:
            return _payload_part(self.style.tail(n_tokens, finish_reason))
        return _payload_part(_json_bytes(self.style.answer(n_tokens, finish_reason)))

    def malformed_frame(self) -> bytes:
        return _payload_part(self.style.malformed_line)


def model_error(endpoint_name: str, container_status: int, container_message: str) -> web.Response:
    """SageMaker's wrapper around a container's own error answer (HTTP 424, the container's status inside)."""
    kind = "server" if container_status >= 500 else "client"
    body = {
        "ErrorCode": "INTERNAL_FAILURE_FROM_MODEL" if container_status >= 500 else "CLIENT_ERROR_FROM_MODEL",
        "Message": f"Received {kind} error ({container_status}) from primary with message "
        f'"{container_message}". See the endpoint\'s CloudWatch logs for more information.',
        "OriginalMessage": container_message,
        "OriginalStatusCode": container_status,
        "LogStreamArn": f"{_LOG_GROUP_ARN_PREFIX}/{endpoint_name}",
    }
    return _aws_error(424, "ModelError", body)


class _BedrockDialect(Dialect):
    def __init__(self, parsed: ParsedRequest) -> None:
        self.parsed = parsed
        self.streamed = parsed.stream
        self.answer_headers = {"x-amzn-RequestId": str(uuid.uuid4())}
        self.stream_headers = {"Content-Type": EVENTSTREAM_CONTENT_TYPE, **self.answer_headers}

    def error(self, fault: Fault) -> web.Response:
        return self.error_response(fault)

    @staticmethod
    def error_response(fault: Fault) -> web.Response:
        if fault is Fault.ERROR_429:
            message = "Too many requests, please wait before trying your request again. (emulated)"
            return _aws_error(429, "ThrottlingException", {"message": message})
        return _aws_error(500, "InternalServerException", {"message": "emulated internal server error"})

    def unavailable(self) -> web.Response:
        return _aws_error(503, "ServiceUnavailableException", {"message": "the emulator is shutting down"})

    def _usage(self, n_tokens: int) -> dict[str, int]:
        prompt_tokens = self.parsed.prompt_tokens
        return {
            "inputTokens": prompt_tokens,
            "outputTokens": n_tokens,
            "totalTokens": prompt_tokens + n_tokens,
        }

    @staticmethod
    def _stop_reason(finish_reason: str) -> str:
        return "max_tokens" if finish_reason == "length" else "end_turn"

    def body(self, n_tokens: int, finish_reason: str, latency_ms: int) -> tuple[bytes, str]:
        answer = {
            "output": {
                "message": {"role": "assistant", "content": [{"text": _answer_text(self.parsed, n_tokens)}]}
            },
            "stopReason": self._stop_reason(finish_reason),
            "usage": self._usage(n_tokens),
            "metrics": {"latencyMs": latency_ms},
        }
        return _json_bytes(answer), "application/json"

    def start_frames(self) -> bytes:
        return eventstream.json_event_message("messageStart", {"role": "assistant"})

    def token_frames(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        return b"".join(
            eventstream.json_event_message(
                "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": answer_token(self.parsed, i)}}
            )
            for i in range(start, stop)
        )

    def end_frames(self, n_tokens: int, finish_reason: str, latency_ms: int) -> bytes:
        return b"".join(
            (
                eventstream.json_event_message("contentBlockStop", {"contentBlockIndex": 0}),
                eventstream.json_event_message(
                    "messageStop", {"stopReason": self._stop_reason(finish_reason)}
                ),
                eventstream.json_event_message(
                    "metadata", {"usage": self._usage(n_tokens), "metrics": {"latencyMs": latency_ms}}
                ),
            )
        )

    def malformed_frame(self) -> bytes:
        frame = eventstream.json_event_message(
            "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "?"}}
        )
        return eventstream.with_bad_message_crc(frame)


def _converse_request(raw: bytes, model_id: str, stream: bool) -> ParsedRequest:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages: at least one message is required")
    texts: list[str] = []
    user_text = ""
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise InvalidRequestError(f"messages.{i}: needs a role of user or assistant")
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise InvalidRequestError(f"messages.{i}.content: at least one content block is required")
        said = [
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        ]
        texts += said
        if message["role"] == "user":
            user_text = "\n".join(said)
    config = body.get("inferenceConfig") or {}
    if not isinstance(config, dict):
        raise InvalidRequestError("inferenceConfig must be an object")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise InvalidRequestError("inferenceConfig.maxTokens must be a positive integer")
    return ParsedRequest(
        kind="chat",
        model=model_id,
        prompt_tokens=get_tokenizer("simple").count("\n".join(texts)),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=True,
        user_text=user_text,
    )


# ------------------------------------------------------------------------------------------- serving


def _sagemaker_builder(request: web.Request, streamed: bool) -> Build:
    endpoint_name = request.match_info["endpoint_name"]

    def build(raw: bytes, state: EmulatorState) -> Dialect:
        try:
            style = _container_style(raw, state)
        except InvalidRequestError as exc:
            container_status = 422 if state.settings.sagemaker_format == "tgi" else 400
            raise RejectedRequestError(model_error(endpoint_name, container_status, str(exc))) from None
        return _SageMakerDialect(style, endpoint_name, streamed)

    return build


def _bedrock_builder(request: web.Request, stream: bool) -> Build:
    model_id = request.match_info["model_id"]

    def build(raw: bytes, state: EmulatorState) -> Dialect:
        try:
            return _BedrockDialect(state.scripted(_converse_request(raw, model_id, stream)))
        except InvalidRequestError as exc:
            raise RejectedRequestError(
                _aws_error(400, "ValidationException", {"message": str(exc)})
            ) from None

    return build


async def _invocations(request: web.Request) -> web.StreamResponse:
    return await serve(request, _sagemaker_builder(request, streamed=False))


async def _invocations_response_stream(request: web.Request) -> web.StreamResponse:
    return await serve(request, _sagemaker_builder(request, streamed=True))


async def _converse(request: web.Request) -> web.StreamResponse:
    return await serve(request, _bedrock_builder(request, stream=False))


async def _converse_stream(request: web.Request) -> web.StreamResponse:
    return await serve(request, _bedrock_builder(request, stream=True))


_ACCESS_DENIED = "You don't have access to the model with the specified model ID."


async def _invoke_model(request: web.Request) -> web.StreamResponse:
    """Bedrock InvokeModel for a Titan text embeddings model (``embeddings``); any other model is refused."""
    state = request.app[STATE_KEY]
    model_id = request.match_info["model_id"]
    raw = await request.read()
    if model_id in state.settings.unavailable_models:
        return _aws_error(403, "AccessDeniedException", {"message": _ACCESS_DENIED})
    generation = titan_generation(model_id)
    if generation is None:
        message = (
            f"the emulator's InvokeModel serves Titan text embeddings models only "
            f"(amazon.titan-embed-text-v2:0, amazon.titan-embed-text-v1), not {model_id}; "
            "use Converse for text generation"
        )
        return _aws_error(400, "ValidationException", {"message": message})
    try:
        parsed = parse_embeddings_request(raw, generation)
    except EmbeddingsRequestError as exc:
        return _aws_error(exc.status, exc.error_type, {"message": str(exc)})
    with state.serving():
        fault = state.draw_fault()
        if fault in (Fault.ERROR_500, Fault.ERROR_429):
            return _BedrockDialect.error_response(fault)
        answer = embeddings_answer(parsed, generation)
        state.embeddings_total += 1
        body = _json_bytes(answer)
        if fault is Fault.MALFORMED:
            body = body[: max(1, len(body) // 2)]
        headers = {
            "Content-Type": "application/json",
            "x-amzn-RequestId": str(uuid.uuid4()),
            "X-Amzn-Bedrock-Invocation-Latency": "0",
            "X-Amzn-Bedrock-Input-Token-Count": str(answer["inputTextTokenCount"]),
        }
        return web.Response(body=body, headers=headers)


async def _foundation_model_availability(request: web.Request) -> web.StreamResponse:
    """Bedrock's GetFoundationModelAvailability: a model of ``unavailable_models`` is not authorized (the
    account lacks access), any other is available and authorized."""
    model_id = request.match_info["model_id"]
    refused = model_id in request.app[STATE_KEY].settings.unavailable_models
    status = "NOT_AVAILABLE" if refused else "AVAILABLE"
    return web.json_response(
        {
            "modelId": model_id,
            "agreementAvailability": {"status": status},
            "authorizationStatus": "NOT_AUTHORIZED" if refused else "AUTHORIZED",
            "entitlementAvailability": status,
            "regionAvailability": "AVAILABLE",
        }
    )


def add_aws_routes(app: web.Application) -> None:
    app.router.add_post("/endpoints/{endpoint_name}/invocations", _invocations)
    app.router.add_post(
        "/endpoints/{endpoint_name}/invocations-response-stream", _invocations_response_stream
    )
    # Model ids can be ARNs with a '/' in them (inference profiles, provisioned throughput).
    app.router.add_post("/model/{model_id:.+}/converse", _converse)
    app.router.add_post("/model/{model_id:.+}/converse-stream", _converse_stream)
    app.router.add_post("/model/{model_id:.+}/invoke", _invoke_model)
    # Bedrock's control plane, for the Plan's check of the judges (AWS_ENDPOINT_URL_BEDROCK in tests).
    app.router.add_get("/foundation-model-availability/{model_id:.+}", _foundation_model_availability)
