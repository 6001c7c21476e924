"""Client for OpenAI-compatible HTTP endpoints (chat and completions APIs), streaming over SSE."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from time import perf_counter
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from fmbench.config import InferenceParameters
from fmbench.endpoints.base import (
    CLIENT_ERROR,
    CONNECTION_ERROR,
    HTTP_4XX,
    HTTP_5XX,
    HTTP_429,
    MALFORMED_RESPONSE,
    STREAM_CUT,
    TIMEOUT,
    InvocationResult,
    mark_sent,
    sending,
    shorten,
)

# A single SSE line above this is not a token chunk: treat it as a malformed response, not a memory sink.
_MAX_SSE_LINE_BYTES = 1 << 20
# Only the start of an error body is kept: enough for the server's message, bounded for a hostile server.
_MAX_ERROR_BODY_BYTES = 4096
_DEFAULT_PROBE_TIMEOUT_S = 5.0
_DONE_LINES = (b"data: [DONE]", b"data:[DONE]")


class _TimedRequest(aiohttp.ClientRequest):
    """Notes when a request's bytes are handed to the connection: that is when it was *sent*.

    aiohttp buffers the headers and writes them with the body from a task of their own, which before
    Python 3.12 runs only after everything else ready on the loop: under load, after the other workers
    have handled their answers. A send time taken before ``session.post`` would count that wait into
    every TTFT and latency (about a millisecond at concurrency 4 to 64 on two cores); taken here, it
    shows where it belongs, in the schedule lag.
    """

    async def write_bytes(self, *args: Any, **kwargs: Any) -> None:
        mark_sent()
        await super().write_bytes(*args, **kwargs)


class OpenAIClient:
    """One shared aiohttp session for every request of a branch, sized for its highest concurrency.

    A session per request would add a TCP handshake to every TTFT and leave thousands of sockets in
    TIME_WAIT; a pool smaller than the concurrency would hide a queue inside the client and bill its
    wait to the endpoint's latency.
    """

    def __init__(
        self,
        base_url: str,
        api: Literal["chat", "completions"] = "chat",
        model: str = "",
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        if api not in ("chat", "completions"):
            raise ValueError(f"api must be 'chat' or 'completions', got {api!r}")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.api = api
        self.model = model
        self.max_connections = max_connections
        self._is_chat = api == "chat"
        self._extra_body = dict(extra_body or {})
        self._url = f"{self.base_url}/chat/completions" if self._is_chat else f"{self.base_url}/completions"
        self._api_key = api_key or None
        common = {"Content-Type": "application/json", **(headers or {})}
        if self._api_key:
            common["Authorization"] = f"Bearer {self._api_key}"
        self._plain_headers = {**common, "Accept": "application/json"}
        # A compressed event stream is released in bursts by the decompressor, which would distort every
        # chunk arrival time: ask for the bytes as the server writes them.
        self._stream_headers = {**common, "Accept": "text/event-stream", "Accept-Encoding": "identity"}
        self._probe_headers = {key: value for key, value in common.items() if key != "Content-Type"}
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily so the client can be built outside the event loop that will use it.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0)
            # No aiohttp timeouts: each request is bounded as a whole by asyncio.timeout in invoke, and
            # aiohttp's default 300 s total would silently cap a longer request_timeout_s.
            timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, request_class=_TimedRequest
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---------------------------------------------------------------------------------------- probe

    async def probe(self, timeout_s: float = _DEFAULT_PROBE_TIMEOUT_S) -> str | None:
        """Any HTTP answer (even 401 or 404) proves the endpoint is there; only silence does not."""
        url = f"{self.base_url}/models"
        session = self._get_session()
        try:
            async with asyncio.timeout(timeout_s), session.get(url, headers=self._probe_headers) as response:
                response.release()
        except TimeoutError:
            return f"no answer from {url} within {timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            return self._redact(f"cannot connect to {url}: {exc.os_error.strerror or exc}")
        except aiohttp.ClientError as exc:
            return self._redact(f"{url}: {type(exc).__name__}: {exc}")
        return None

    async def open_connections(self, count: int, timeout_s: float = _DEFAULT_PROBE_TIMEOUT_S) -> None:
        """``count`` probes at once: each needs a connection of its own, which stays in the pool after."""
        count = min(count, self.max_connections)
        if count > 1:
            await asyncio.gather(*(self.probe(timeout_s) for _ in range(count)))

    # --------------------------------------------------------------------------------------- invoke

    def _encode(
        self, prompt_text: str, params: InferenceParameters, messages: list[dict[str, str]] | None = None
    ) -> bytes:
        body: dict[str, Any] = {}
        if self.model:
            body["model"] = self.model
        if self._is_chat:
            user_only = [{"role": "user", "content": prompt_text}]
            body["messages"] = messages if messages is not None else user_only
        else:
            body["prompt"] = prompt_text
        body["max_tokens"] = params.max_new_tokens
        if params.fixed_output_tokens:
            # vLLM's (and SGLang's) extensions: no early stop, so every answer is max_tokens long
            body["min_tokens"] = params.max_new_tokens
            body["ignore_eos"] = True
        body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        body["stream"] = params.stream
        if params.stream:
            body["stream_options"] = {"include_usage": True}
        if self._extra_body:
            body.update(self._extra_body)
        return json.dumps(body).encode()

    async def invoke(
        self,
        prompt_text: str,
        params: InferenceParameters,
        timeout_s: float,
        *,
        messages: list[dict[str, str]] | None = None,
    ) -> InvocationResult:
        """One request, bounded as a whole (connect to last byte) by ``timeout_s``; never raises.

        ``result.end_perf_s`` is set only once the response is complete, so an error that comes after
        completion (a drop while draining the connection) cannot turn a good answer into a failure.
        """
        data = self._encode(prompt_text, params, messages)
        headers = self._stream_headers if params.stream else self._plain_headers
        session = self._get_session()
        parts: list[str] = []
        reasoning: list[str] = []
        # Until the bytes go out (or if they never do), the send time is when the request was started.
        result = InvocationResult(send_perf_s=perf_counter())
        with sending(result):
            try:
                async with (
                    asyncio.timeout(timeout_s),
                    session.post(self._url, data=data, headers=headers) as response,
                ):
                    result.http_status = response.status
                    if not 200 <= response.status < 300:
                        await self._read_error(response, result)
                    elif params.stream:
                        await self._read_stream(response, result, parts, reasoning)
                    else:
                        await self._read_json(response, result, parts, reasoning)
            except TimeoutError:
                if not result.end_perf_s:
                    result.fail(TIMEOUT, f"no complete response within {timeout_s:g} s")
            except HttpProcessingError as exc:
                # LineTooLong and HTTP parser errors: the bytes were not a response we can read.
                result.fail(MALFORMED_RESPONSE, f"{type(exc).__name__}: {exc.message}")
            except aiohttp.ClientConnectorError as exc:
                # No connection was made: nothing was asked of the server (docs/metrics.md, "Error classes").
                result.fail(CONNECTION_ERROR, self._redact(f"{type(exc).__name__}: {exc}"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                # The server closed a connection that was made: the same class streamed or not.
                if not result.end_perf_s:
                    where = "before the answer" if result.http_status is None else "mid-answer"
                    result.fail(STREAM_CUT, f"connection lost {where}: {type(exc).__name__}: {exc}")
            except aiohttp.ClientResponseError as exc:
                result.fail(MALFORMED_RESPONSE, f"{type(exc).__name__}: {exc.message}")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                # JSON that does not parse or does not have the OpenAI shape.
                result.fail(MALFORMED_RESPONSE, f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - every failure must become a record, never a lost request
                result.fail(CLIENT_ERROR, self._redact(f"{type(exc).__name__}: {exc}"))
            finally:
                result.settle(parts, streamed=params.stream, reasoning_pieces=reasoning)
        return result

    async def _read_stream(
        self,
        response: aiohttp.ClientResponse,
        result: InvocationResult,
        parts: list[str],
        reasoning: list[str],
    ) -> None:
        """The hot path: one read per arrival of bytes, lines split in bulk, events decoded with orjson.

        Every event of one read gets that read's arrival time: they arrived together, so timestamping them
        one by one as they are parsed would invent gaps. Reading line by line through aiohttp cost about
        half again as much CPU per request (bench/profile_runner.py).

        A reasoning model's chat stream first sends its reasoning (``delta.reasoning_content``, vLLM and
        DeepSeek; ``delta.reasoning`` in newer vLLM): those chunks are timed like the answer's (TTFT is the
        first token of any kind, ITL spans both), kept apart, and the first answer chunk's time is noted.
        A delta with content is looked at no further, so a plain answer costs no extra lookup.
        """
        content = response.content
        chunk_perf_s = result.chunk_perf_s
        is_chat = self._is_chat
        loads = orjson.loads
        data_lines = 0
        finished = False
        pending = b""
        while True:
            block = await content.readany()
            now_s = perf_counter()
            if not block:
                break
            lines = (pending + block if pending else block).split(b"\n")
            pending = lines.pop()  # an incomplete last line waits for the rest of its bytes
            if len(pending) > _MAX_SSE_LINE_BYTES:
                result.fail(MALFORMED_RESPONSE, f"an SSE line longer than {_MAX_SSE_LINE_BYTES} bytes")
                return
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank separators, ": keep-alive" comments, event:/id:/retry: fields
                if line.startswith(_DONE_LINES):
                    result.end_perf_s = now_s
                    await self._drain(content)
                    return
                data_lines += 1
                event = loads(line[5:])  # after "data:"; orjson skips the space (and a "\r") around the JSON
                choices = event.get("choices")
                if choices:
                    choice = choices[0]
                    if is_chat:
                        delta = choice.get("delta")
                        piece = delta.get("content") if delta else None
                        if not piece and delta:
                            thought = delta.get("reasoning_content") or delta.get("reasoning")
                            if thought:
                                chunk_perf_s.append(now_s)
                                reasoning.append(thought)
                    else:
                        piece = choice.get("text")
                    if piece:
                        if not parts:
                            result.first_answer_perf_s = now_s
                        chunk_perf_s.append(now_s)
                        parts.append(piece)
                    if choice.get("finish_reason"):
                        finished = True
                usage = event.get("usage")
                if usage:
                    _take_usage(result, usage)
                elif "error" in event:
                    result.fail(STREAM_CUT, self._redact(f"error event in stream: {_error_text(event)}"))
                    return
                if finished:
                    result.end_perf_s = now_s
        if finished:
            return  # ended after finish_reason without [DONE]: complete, some servers never send it
        if data_lines == 0:
            result.fail(
                MALFORMED_RESPONSE,
                f"no SSE data lines in the response (content-type {response.content_type or 'none'})",
            )
        else:
            result.fail(STREAM_CUT, f"stream ended without [DONE] or finish_reason after {data_lines} events")

    @staticmethod
    async def _drain(content: aiohttp.StreamReader) -> None:
        # Reading to the end of the chunked body lets aiohttp put the connection back into the pool.
        while await content.readany():
            pass

    async def _read_json(
        self,
        response: aiohttp.ClientResponse,
        result: InvocationResult,
        parts: list[str],
        reasoning: list[str],
    ) -> None:
        raw = await response.read()
        end_perf_s = perf_counter()
        body = json.loads(raw)
        if "choices" not in body and "error" in body:
            result.fail(MALFORMED_RESPONSE, self._redact(f"error body with HTTP 200: {_error_text(body)}"))
            return
        choice = body["choices"][0]
        if self._is_chat:
            message = choice["message"]
            text = message.get("content")
            thought = message.get("reasoning_content") or message.get("reasoning")
            if thought:
                reasoning.append(thought)
        else:
            text = choice.get("text")
        if text:
            parts.append(text)
        usage = body.get("usage")
        if usage:
            _take_usage(result, usage)
        result.end_perf_s = end_perf_s

    async def _read_error(self, response: aiohttp.ClientResponse, result: InvocationResult) -> None:
        status = response.status
        if status == 429:
            error_class = HTTP_429
        elif 400 <= status < 500:
            error_class = HTTP_4XX
        elif status >= 500:
            error_class = HTTP_5XX
        else:
            error_class = MALFORMED_RESPONSE  # 1xx or an unfollowed 3xx: not an answer
        detail = ""
        try:
            body = await response.content.read(_MAX_ERROR_BODY_BYTES)
            detail = _error_text_from_bytes(body)
        except (aiohttp.ClientError, HttpProcessingError):
            detail = ""  # the status alone classifies the failure
        message = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        result.fail(error_class, self._redact(message), http_status=status)

    def _redact(self, message: str) -> str:
        """Servers sometimes echo the key they refused; it must not reach a Parquet row."""
        if self._api_key and self._api_key in message:
            return message.replace(self._api_key, "***")
        return message


def _take_usage(result: InvocationResult, usage: Any) -> None:
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    if isinstance(prompt_tokens, int):
        result.usage_prompt_tokens = prompt_tokens
    if isinstance(completion_tokens, int):
        result.usage_completion_tokens = completion_tokens
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict):
        reasoning_tokens = details.get("reasoning_tokens")
        if isinstance(reasoning_tokens, int):
            result.usage_reasoning_tokens = reasoning_tokens


def _error_text(body: Any) -> str:
    """The human part of the usual error shapes: OpenAI's, FastAPI's and plain strings."""
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if key in body:
                return _error_text(body[key])
        return json.dumps(body)[:_MAX_ERROR_BODY_BYTES]
    if isinstance(body, list) and body:
        return _error_text(body[0])
    return str(body)


def _error_text_from_bytes(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        return shorten(_error_text(json.loads(text)))
    except ValueError:
        return shorten(text)
