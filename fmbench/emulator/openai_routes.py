"""The OpenAI API's routes of the emulator: chat and text completions (JSON or Server-Sent Events), models."""

from __future__ import annotations

import json

from aiohttp import web

from fmbench.emulator.generation import Build, Dialect, RejectedRequestError, serve
from fmbench.emulator.protocol import (
    DONE_EVENT,
    MALFORMED_SSE_EVENT,
    ApiKind,
    InvalidRequestError,
    ParsedRequest,
    ResponseWriter,
    error_body,
    parse_request,
)
from fmbench.emulator.state import STATE_KEY, EmulatorState, Fault

RETRY_AFTER_S = 1
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json_error(
    status: int, message: str, error_type: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(error_body(message, error_type, code), status=status, headers=headers)


class _OpenAIDialect(Dialect):
    """The OpenAI API: JSON errors, a completion object, or Server-Sent Events ending in ``[DONE]``."""

    def __init__(self, parsed: ParsedRequest, model: str, reasoning_tokens: int) -> None:
        self.parsed = parsed
        self.streamed = parsed.stream
        self.stream_headers = _SSE_HEADERS
        self.answer_headers = {}
        self.writer = ResponseWriter(parsed, parsed.model or model, reasoning_tokens)

    def error(self, fault: Fault) -> web.Response:
        if fault is Fault.ERROR_429:
            return _json_error(
                429,
                "emulated rate limit: too many requests, retry later",
                "rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return _json_error(500, "emulated internal server error", "server_error")

    def unavailable(self) -> web.Response:
        return _json_error(503, "the emulator is shutting down", "server_error")

    def body(self, n_tokens: int, finish_reason: str, latency_ms: int) -> tuple[bytes, str]:
        return json.dumps(self.writer.full_response(n_tokens, finish_reason)).encode(), "application/json"

    def token_frames(self, start: int, stop: int, n_tokens: int, finish_reason: str) -> bytes:
        token_chunk = self.writer.token_chunk
        if stop == start + 1:  # the hot path: one token due at a time
            return token_chunk(start)
        return b"".join([token_chunk(i) for i in range(start, stop)])

    def end_frames(self, n_tokens: int, finish_reason: str, latency_ms: int) -> bytes:
        tail = [self.writer.finish_chunk(finish_reason)]
        if self.parsed.include_usage:
            tail.append(self.writer.usage_chunk(n_tokens))
        tail.append(DONE_EVENT)
        return b"".join(tail)

    def malformed_frame(self) -> bytes:
        return MALFORMED_SSE_EVENT


def _openai_builder(kind: ApiKind) -> Build:
    def build(raw: bytes, state: EmulatorState) -> Dialect:
        try:
            settings = state.settings
            parsed = state.scripted(parse_request(kind, raw))
            state.count_temperature(parsed)
            return _OpenAIDialect(parsed, settings.model, settings.reasoning_tokens)
        except InvalidRequestError as exc:
            raise RejectedRequestError(_json_error(400, str(exc), "invalid_request_error")) from None

    return build


_build_chat = _openai_builder("chat")
_build_completion = _openai_builder("completions")


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, _build_chat)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, _build_completion)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    model = {"id": state.settings.model, "object": "model", "created": 0, "owned_by": "fmbench-emulator"}
    return web.json_response({"object": "list", "data": [model]})


def add_openai_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
