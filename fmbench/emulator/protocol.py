"""OpenAI wire format for the emulator: request validation and the JSON/SSE bodies it sends back."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fmbench.emulator.answers import Script
from fmbench.tokenizer import get_tokenizer

ApiKind = Literal["chat", "completions"]

DEFAULT_MAX_TOKENS = 16
_MAX_TOKENS_LIMIT = 1_000_000

# Pure word characters, so that the simple tokenizer counts " word" as exactly one token and the client's
# token count of the streamed text equals the number of chunks.
_WORDS = (
    "the of and to in is that for it as with was on be by at this from or an are which not but have "
    "had one all were when there can more if no out so said what up its about into than them only "
    "other new some could time these two may then first any like now my such make over our even most "
    "after also made many before must through back years where much your way well down should because "
    "each just those people how too little state good very world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year off "
    "come since against go came right used take three"
)
_VOCABULARY = tuple(_WORDS.split())


class InvalidRequestError(ValueError):
    """A request body the OpenAI API would reject with HTTP 400."""


@dataclass(frozen=True)
class ParsedRequest:
    kind: ApiKind
    model: str | None
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    # vLLM's extensions that fix the output length: generate at least min_tokens, or (ignore_eos) up to
    # max_tokens whatever the model would have stopped at.
    min_tokens: int = 0
    ignore_eos: bool = False
    # The last user message (or the prompt): what the emulated accuracy and judge read.
    user_text: str = ""
    # The answer's own words (emulator/answers.py), else the filler words of ``generated_token``.
    script: Script | None = None
    # The sampling temperature asked for (None: not given), counted in /health's ``temperatures``.
    temperature: float | None = None


def answer_token(parsed: ParsedRequest, index: int, reasoning_tokens: int = 0) -> str:
    """Token ``index`` of the answer to ``parsed``: its script's words (after any reasoning), then filler."""
    script = parsed.script
    if script is not None and 0 <= index - reasoning_tokens < len(script.tokens):
        return script.tokens[index - reasoning_tokens]
    return generated_token(index)


def generated_token(index: int) -> str:
    return " " + _VOCABULARY[index % len(_VOCABULARY)]


_TEMPLATE_MARKER = "\x00token\x00"  # no generated token contains it
_ENCODED_TOKENS = tuple(json.dumps(" " + word).encode() for word in _VOCABULARY)


def _encoded_token(index: int) -> bytes:
    """``generated_token(index)`` as a JSON string, encoded."""
    return _ENCODED_TOKENS[index % len(_ENCODED_TOKENS)]


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict):
                raise InvalidRequestError(f"{where}: each content part must be an object")
            if part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise InvalidRequestError(f"{where}: a text part needs a string 'text'")
                texts.append(text)
        return "\n".join(texts)
    raise InvalidRequestError(f"{where}: 'content' must be a string, a list of parts or null")


def _prompt_text(kind: ApiKind, body: dict[str, Any]) -> tuple[str, str]:
    """(every message's text, the last user message's text); for completions the prompt, twice."""
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError("'messages' is required and must be a non-empty list")
        texts = []
        user_text = ""
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InvalidRequestError(f"messages[{i}] must be an object")
            if not isinstance(message.get("role"), str):
                raise InvalidRequestError(f"messages[{i}]: 'role' is required and must be a string")
            texts.append(_content_text(message.get("content"), f"messages[{i}]"))
            if message["role"] == "user":
                user_text = texts[-1]
        return "\n".join(texts), user_text
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError("'prompt' is required and must be a string")
    return prompt, prompt


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequestError(f"'{key}' must be an integer")
        if not 1 <= value <= _MAX_TOKENS_LIMIT:
            raise InvalidRequestError(f"'{key}' must be between 1 and {_MAX_TOKENS_LIMIT}")
        return value
    return None


def _min_tokens(body: dict[str, Any], max_tokens: int | None) -> int:
    value = body.get("min_tokens")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestError("'min_tokens' must be a non-negative integer")
    if max_tokens is not None and value > max_tokens:
        raise InvalidRequestError(f"'min_tokens' ({value}) must be at most 'max_tokens' ({max_tokens})")
    return value


def parse_request(kind: ApiKind, raw_body: bytes) -> ParsedRequest:
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be a boolean")
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequestError("the emulator only serves n=1")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise InvalidRequestError("'stream_options' must be an object")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidRequestError("'ignore_eos' must be a boolean")
    prompt, user_text = _prompt_text(kind, body)
    max_tokens = _max_tokens(body)
    return ParsedRequest(
        kind=kind,
        model=model,
        prompt_tokens=get_tokenizer("simple").count(prompt),
        max_tokens=max_tokens,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage", False)),
        min_tokens=_min_tokens(body, max_tokens),
        ignore_eos=ignore_eos,
        user_text=user_text,
        temperature=temperature if isinstance(temperature := body.get("temperature"), int | float) else None,
    )


def error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> dict[str, Any]:
    """The usage object; with reasoning, OpenAI's ``completion_tokens_details`` (the completion count
    includes the reasoning tokens, as reasoning servers count them)."""
    counts: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if reasoning_tokens:
        counts["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return counts


class ResponseWriter:
    """Bodies of one response, all sharing the completion id, creation time and model name.

    ``reasoning_tokens``: the first that many tokens of a chat answer are reasoning, sent as vLLM and
    DeepSeek send it (``delta.reasoning_content``, ``message.reasoning_content``), before the answer. They
    count in ``max_tokens`` and in the completion tokens. The completions API has no reasoning field, so
    there every token is text.
    """

    def __init__(self, request: ParsedRequest, model: str, reasoning_tokens: int = 0) -> None:
        self.request = request
        self.model = model
        prefix = "chatcmpl" if request.kind == "chat" else "cmpl"
        self.completion_id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.reasoning_tokens = reasoning_tokens if request.kind == "chat" else 0
        self._token_template: tuple[bytes, bytes] | None = None
        self._reasoning_template: tuple[bytes, bytes] | None = None

    def _reasoning_in(self, completion_tokens: int) -> int:
        return min(self.reasoning_tokens, completion_tokens)

    def _envelope(self) -> dict[str, Any]:
        chat = self.request.kind == "chat"
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.created,
            "model": self.model,
        }

    def _sse(self, payload: dict[str, Any]) -> bytes:
        if self.request.include_usage and "usage" not in payload:
            payload["usage"] = None
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def token_chunk(self, index: int) -> bytes:
        """The SSE event of token ``index``; after the first, from a template (the hot path at load)."""
        if self.request.script is not None:
            return self._sse_for(index, answer_token(self.request, index, self.reasoning_tokens))
        if index == 0 or index == self.reasoning_tokens:
            return self.token_chunk_encoded(index)
        if index < self.reasoning_tokens:
            template = self._reasoning_template
            if template is None:
                template = self._reasoning_template = self._template(index)
        else:
            template = self._token_template
            if template is None:
                template = self._token_template = self._template(index)
        return template[0] + _encoded_token(index) + template[1]

    def _template(self, index: int) -> tuple[bytes, bytes]:
        # Encoded once per response with a marker for the text, so every chunk has the same layout as the
        # fully encoded one (a test compares them) at the cost of one join.
        marker = json.dumps(_TEMPLATE_MARKER).encode()
        head, tail = self._sse_for(index, _TEMPLATE_MARKER).split(marker)
        return head, tail

    def token_chunk_encoded(self, index: int) -> bytes:
        """Token ``index``'s event, encoded in full."""
        return self._sse_for(index, generated_token(index))

    def _sse_for(self, index: int, text: str) -> bytes:
        choice: dict[str, Any]
        if self.request.kind == "chat":
            # The role rides on the first token rather than on an empty chunk of its own, so that a client
            # timing the first chunk measures the first token.
            key = "reasoning_content" if index < self.reasoning_tokens else "content"
            delta = {"role": "assistant", key: text} if index == 0 else {key: text}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        return self._sse({**self._envelope(), "choices": [choice]})

    def finish_chunk(self, finish_reason: str) -> bytes:
        choice: dict[str, Any]
        if self.request.kind == "chat":
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": finish_reason}
        return self._sse({**self._envelope(), "choices": [choice]})

    def usage_chunk(self, completion_tokens: int) -> bytes:
        return self._sse(
            {
                **self._envelope(),
                "choices": [],
                "usage": usage(
                    self.request.prompt_tokens, completion_tokens, self._reasoning_in(completion_tokens)
                ),
            }
        )

    def full_response(self, completion_tokens: int, finish_reason: str) -> dict[str, Any]:
        reasoning = self._reasoning_in(completion_tokens)
        text = "".join(answer_token(self.request, i, reasoning) for i in range(reasoning, completion_tokens))
        choice: dict[str, Any]
        if self.request.kind == "chat":
            message = {"role": "assistant", "content": text}
            if reasoning:
                message["reasoning_content"] = "".join(generated_token(i) for i in range(reasoning))
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            kind_object = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            kind_object = "text_completion"
        return {
            **self._envelope(),
            "object": kind_object,
            "choices": [choice],
            "usage": usage(self.request.prompt_tokens, completion_tokens, reasoning),
        }


DONE_EVENT = b"data: [DONE]\n\n"
# What a server bug or a proxy that mangles a stream sends: a data line that is not JSON.
MALFORMED_SSE_EVENT = b'data: {"choices": [{"delta": {"content": \n\n'
