"""Payload formats of SageMaker serving containers: request bodies, answers and streamed lines.

SageMaker passes the body through to the container untouched, so the shape of a request and of its answer
depends on the container. What each format follows:

- ``lmi`` (DJL LMI, rolling batch): ``{"inputs", "parameters"}``; the answer is ``{"generated_text",
  "details"}``; streamed, one JSON line per token, ``{"token": {"id", "text", "log_prob"}}``, the last line
  adding ``generated_text`` and ``details`` ({finish_reason, generated_tokens, inputs}); a generation error
  ends the stream with ``details.finish_reason == "error"``. LMI reports no prompt token count. Source:
  deepjavalibrary/djl-serving, serving/docs/lmi/user_guides/lmi_input_output_schema.md and
  engines/python/setup/djl_python/output_formatter.py (``_jsonlines_output_formatter``).
- ``tgi`` (Hugging Face TGI, SageMaker route ``/invocations`` = ``compat_generate``): same request; the
  answer is a one-element array of ``{"generated_text", "details"}``; streamed as server-sent events
  ``data:{"index", "token": {"id", "text", "logprob", "special"}, "generated_text": null, "details": null}``,
  the last event carrying ``generated_text`` and ``details`` ({finish_reason, generated_tokens,
  input_length, seed}); errors are events ``{"error", "error_type"}``. Source:
  huggingface/text-generation-inference, docs/openapi.json (StreamResponse, StreamDetails).
- ``vllm-openai``: the OpenAI chat completions API inside the SageMaker body (vLLM, LMI's OpenAI schema,
  TGI's Messages API): chat.completion / chat.completion.chunk server-sent events, usage when asked for.
- ``custom``: a user's JSON template and the path of the generated text in the answer (and, when
  streaming, in each JSON line).

Streamed ``PayloadPart`` bytes may split a line or join several: decoders buffer and split on newlines.
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from fmbench.config import InferenceParameters
from fmbench.custom_format import PayloadFormatError, RequestTemplate, TextPath

PayloadFormatName = Literal["lmi", "tgi", "vllm-openai", "custom"]
PAYLOAD_FORMATS: tuple[PayloadFormatName, ...] = ("lmi", "tgi", "vllm-openai", "custom")

# A line longer than this without a newline is not a token event: stop buffering it.
MAX_LINE_BYTES = 1 << 20

_SSE_DATA = b"data:"
# Other server-sent-event fields and comments carry no tokens.
_SSE_OTHER_PREFIXES = (b"event:", b"id:", b"retry:", b":")
_DONE = b"[DONE]"


class GenerationFailedError(Exception):
    """The container reported a failure inside a stream that had started (HTTP 200)."""


@dataclass(slots=True)
class ParsedResponse:
    """A complete, non-streamed answer."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


# ----------------------------------------------------------------------------------------- helpers


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise PayloadFormatError(f"{what} is not a JSON object")
    return value


def _first_if_list(value: Any) -> Any:
    """TGI (and LMI in TGI-compatible mode) wrap a single answer in a one-element array."""
    if isinstance(value, list):
        if not value:
            raise PayloadFormatError("the answer is an empty JSON array")
        return value[0]
    return value


def _sampling_parameters(params: InferenceParameters) -> dict[str, Any]:
    """``parameters`` of LMI and TGI.

    TGI rejects temperature 0 and top_p 1 (both must lie strictly inside their ranges), and LMI up to 0.31
    samples only with ``do_sample``: greedy decoding is said with ``do_sample: false`` instead.
    """
    parameters: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "details": True}
    if params.temperature > 0:
        parameters["do_sample"] = True
        parameters["temperature"] = params.temperature
    else:
        parameters["do_sample"] = False
    if params.top_p is not None and params.top_p < 1:
        parameters["top_p"] = params.top_p
    return parameters


def _error_text(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("message", "error", "detail"):
            if key in value:
                return _error_text(value[key])
        return json.dumps(value)
    return str(value)


# ------------------------------------------------------------------------------------ stream decoding


class StreamDecoder(abc.ABC):
    """Bytes of a response stream in, text pieces out; remembers usage and whether the answer completed.

    ``complete`` turns true at the format's end marker (LMI's and TGI's last line, OpenAI's finish_reason
    or ``[DONE]``). A format without one (``custom``) is complete when the stream ends cleanly.
    """

    has_end_marker: ClassVar[bool] = True

    def __init__(self) -> None:
        self._pending = b""
        self.complete = False
        self.data_lines = 0
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def feed(self, data: bytes) -> list[str]:
        """The text pieces of every line that ``data`` completes (one piece per token line)."""
        buffered = self._pending + data if self._pending else data
        *lines, self._pending = buffered.split(b"\n")
        if len(self._pending) > MAX_LINE_BYTES:
            raise PayloadFormatError(f"a streamed line is longer than {MAX_LINE_BYTES} bytes")
        pieces = []
        for line in lines:
            piece = self._line(line)
            if piece:
                pieces.append(piece)
        return pieces

    def finish(self) -> list[str]:
        """The last line, when the stream ended without a newline after it."""
        line, self._pending = self._pending, b""
        piece = self._line(line) if line.strip() else None
        return [piece] if piece else []

    def _line(self, raw_line: bytes) -> str | None:
        line = raw_line.strip()
        if not line:
            return None
        if line.startswith(_SSE_DATA):
            line = line[len(_SSE_DATA) :].lstrip()
        elif line.startswith(_SSE_OTHER_PREFIXES):
            return None
        if line == _DONE:
            self.complete = True
            return None
        self.data_lines += 1
        return self._event(_json_object(line, "a streamed line"))

    @abc.abstractmethod
    def _event(self, event: dict[str, Any]) -> str | None:
        """The text of one parsed line, if it carries any; raises GenerationFailedError for error events."""


class _LmiStreamDecoder(StreamDecoder):
    def _event(self, event: dict[str, Any]) -> str | None:
        details = event.get("details")
        if isinstance(details, dict) and details.get("finish_reason") == "error":
            raise GenerationFailedError("LMI ended the stream with finish_reason 'error'")
        if "error" in event and "token" not in event:
            raise GenerationFailedError(_error_text(event))
        token = event.get("token")
        if not isinstance(token, dict):
            raise PayloadFormatError("an LMI line without a 'token' object")
        if "generated_text" in event:
            self.complete = True
            if isinstance(details, dict):
                self.completion_tokens = _count(details.get("generated_tokens"))
        text = token.get("text")
        return text if isinstance(text, str) else None


class _TgiStreamDecoder(StreamDecoder):
    def _event(self, event: dict[str, Any]) -> str | None:
        if "error" in event:
            kind = event.get("error_type")
            message = _error_text(event["error"])
            raise GenerationFailedError(f"{kind}: {message}" if kind else message)
        token = event.get("token")
        if not isinstance(token, dict):
            raise PayloadFormatError("a TGI event without a 'token' object")
        if event.get("generated_text") is not None:
            self.complete = True
            details = event.get("details")
            if isinstance(details, dict):
                self.completion_tokens = _count(details.get("generated_tokens"))
                self.prompt_tokens = _count(details.get("input_length"))
        if token.get("special"):
            return None  # end-of-sequence and other control tokens are not part of the answer
        text = token.get("text")
        return text if isinstance(text, str) else None


class _OpenAIChatStreamDecoder(StreamDecoder):
    def _event(self, event: dict[str, Any]) -> str | None:
        if "error" in event and "choices" not in event:
            raise GenerationFailedError(_error_text(event["error"]))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))
        choices = event.get("choices")
        if not choices:
            return None
        choice = choices[0]
        if choice.get("finish_reason"):
            self.complete = True
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        return text if isinstance(text, str) else None


class _CustomStreamDecoder(StreamDecoder):
    has_end_marker = False

    def __init__(self, path: TextPath) -> None:
        super().__init__()
        self._path = path

    def _event(self, event: dict[str, Any]) -> str | None:
        return self._path.find(event)  # lines without the path (a final summary, say) carry no text


# --------------------------------------------------------------------------------------------- formats


class PayloadFormat(abc.ABC):
    """One container's dialect: what to send and how to read what comes back."""

    name: ClassVar[PayloadFormatName]

    @abc.abstractmethod
    def request_body(self, prompt_text: str, params: InferenceParameters) -> bytes: ...

    @abc.abstractmethod
    def parse_response(self, body: bytes) -> ParsedResponse: ...

    @abc.abstractmethod
    def stream_decoder(self) -> StreamDecoder: ...


class LmiFormat(PayloadFormat):
    name: ClassVar[PayloadFormatName] = "lmi"

    def request_body(self, prompt_text: str, params: InferenceParameters) -> bytes:
        body: dict[str, Any] = {"inputs": prompt_text, "parameters": _sampling_parameters(params)}
        if params.stream:
            body["stream"] = True
        return json.dumps(body).encode()

    def parse_response(self, body: bytes) -> ParsedResponse:
        answer = _first_if_list(json.loads(body))
        if not isinstance(answer, dict) or not isinstance(answer.get("generated_text"), str):
            raise PayloadFormatError(f"an {self.name} answer without 'generated_text'")
        details = answer.get("details")
        parsed = ParsedResponse(text=answer["generated_text"])
        if isinstance(details, dict):
            if details.get("finish_reason") == "error":
                raise GenerationFailedError(f"{self.name} answered with finish_reason 'error'")
            parsed.completion_tokens = _count(details.get("generated_tokens"))
        return parsed

    def stream_decoder(self) -> StreamDecoder:
        return _LmiStreamDecoder()


class TgiFormat(LmiFormat):
    name: ClassVar[PayloadFormatName] = "tgi"

    def stream_decoder(self) -> StreamDecoder:
        return _TgiStreamDecoder()


class VllmOpenAIFormat(PayloadFormat):
    name: ClassVar[PayloadFormatName] = "vllm-openai"

    def __init__(self, model: str = "") -> None:
        self.model = model

    def request_body(self, prompt_text: str, params: InferenceParameters) -> bytes:
        body: dict[str, Any] = {}
        if self.model:
            body["model"] = self.model
        body["messages"] = [{"role": "user", "content": prompt_text}]
        body["max_tokens"] = params.max_new_tokens
        body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        body["stream"] = params.stream
        if params.stream:
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

    def parse_response(self, body: bytes) -> ParsedResponse:
        answer = _json_object(body, "the answer")
        if "choices" not in answer and "error" in answer:
            raise GenerationFailedError(_error_text(answer["error"]))
        message = answer["choices"][0]["message"]
        content = message.get("content")
        parsed = ParsedResponse(text=content if isinstance(content, str) else "")
        usage = answer.get("usage")
        if isinstance(usage, dict):
            parsed.prompt_tokens = _count(usage.get("prompt_tokens"))
            parsed.completion_tokens = _count(usage.get("completion_tokens"))
        return parsed

    def stream_decoder(self) -> StreamDecoder:
        return _OpenAIChatStreamDecoder()


class CustomFormat(PayloadFormat):
    name: ClassVar[PayloadFormatName] = "custom"

    def __init__(self, request_template: str, response_text_path: str) -> None:
        self.template = RequestTemplate(request_template)
        self.path = TextPath(response_text_path)

    def request_body(self, prompt_text: str, params: InferenceParameters) -> bytes:
        return self.template.render(
            prompt_text,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
        )

    def parse_response(self, body: bytes) -> ParsedResponse:
        text = self.path.find(json.loads(body))
        if text is None:
            raise PayloadFormatError(f"the answer has no text at {self.path.expression!r}")
        return ParsedResponse(text=text)

    def stream_decoder(self) -> StreamDecoder:
        return _CustomStreamDecoder(self.path)


def payload_format(
    name: PayloadFormatName,
    *,
    model: str = "",
    request_template: str | None = None,
    response_text_path: str | None = None,
) -> PayloadFormat:
    """The format a SageMaker target names; ``custom`` needs the template and the text path."""
    if name == "lmi":
        return LmiFormat()
    if name == "tgi":
        return TgiFormat()
    if name == "vllm-openai":
        return VllmOpenAIFormat(model)
    if name == "custom":
        if request_template is None or response_text_path is None:
            raise ValueError("the custom payload format needs request_template and response_text_path")
        return CustomFormat(request_template, response_text_path)
    raise ValueError(f"unknown payload format {name!r}; known: {', '.join(PAYLOAD_FORMATS)}")
