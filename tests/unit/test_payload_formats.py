"""SageMaker payload formats: request bodies, answers, and stream lines however the parts cut them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from fmbench.config import InferenceParameters, SageMakerTarget
from fmbench.custom_format import PayloadFormatError, RequestTemplate, TextPath
from fmbench.endpoints.formats import (
    CustomFormat,
    GenerationFailedError,
    LmiFormat,
    PayloadFormat,
    StreamDecoder,
    TgiFormat,
    VllmOpenAIFormat,
    payload_format,
)

STREAM = InferenceParameters(max_new_tokens=64, temperature=0.7, top_p=0.9, stream=True)
ONCE = InferenceParameters(max_new_tokens=64, temperature=0.0, stream=False)

LMI_LINES = [
    b'{"token": {"id": 304, "text": "Deep", "log_prob": -0.05}}\n',
    b'{"token": {"id": 11157, "text": " Learning", "log_prob": -1.2}}\n',
    b'{"token": {"id": 5972, "text": " rocks", "log_prob": -0.6}, "generated_text": "Deep Learning rocks", '
    b'"details": {"finish_reason": "length", "generated_tokens": 3, "inputs": "What is DL?"}}\n',
]
TGI_EVENTS = [
    b'data:{"index":0,"token":{"id":1,"text":"Deep","logprob":-0.1,"special":false},'
    b'"generated_text":null,"details":null}\n\n',
    b'data: {"index":1,"token":{"id":2,"text":" Learning","logprob":-0.1,"special":false},'
    b'"generated_text":null,"details":null}\n\n',
    b'data:{"index":2,"token":{"id":3,"text":" rocks","logprob":-0.1,"special":false},'
    b'"generated_text":null,"details":null}\n\n',
    b'data:{"index":3,"token":{"id":2,"text":"</s>","logprob":-0.1,"special":true},'
    b'"generated_text":"Deep Learning rocks","details":{"finish_reason":"eos_token","generated_tokens":4,'
    b'"input_length":5,"seed":null}}\n\n',
]
OPENAI_EVENTS = [
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Deep"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" Learning"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":" rocks"},"finish_reason":null}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}\n\n',
    b"data: [DONE]\n\n",
]


def decode(fmt: PayloadFormat, parts: list[bytes]) -> tuple[list[list[str]], StreamDecoder]:
    decoder = fmt.stream_decoder()
    pieces = [decoder.feed(part) for part in parts]
    pieces.append(decoder.finish())
    return pieces, decoder


def every_split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


# ------------------------------------------------------------------------------------------ requests


def test_lmi_and_tgi_bodies_are_inputs_and_parameters() -> None:
    for fmt in (LmiFormat(), TgiFormat()):
        assert json.loads(fmt.request_body("Hi", STREAM)) == {
            "inputs": "Hi",
            "parameters": {
                "max_new_tokens": 64,
                "details": True,
                "do_sample": True,
                "temperature": 0.7,
                "top_p": 0.9,
            },
            "stream": True,
        }
        # Greedy: TGI refuses temperature 0, so it is said with do_sample false instead.
        assert json.loads(fmt.request_body("Hi", ONCE)) == {
            "inputs": "Hi",
            "parameters": {"max_new_tokens": 64, "details": True, "do_sample": False},
        }


def test_top_p_of_one_is_left_out_because_tgi_refuses_it() -> None:
    params = InferenceParameters(max_new_tokens=8, temperature=0.5, top_p=1.0, stream=False)
    assert "top_p" not in json.loads(TgiFormat().request_body("Hi", params))["parameters"]


def test_vllm_openai_body_is_an_openai_chat_request_with_usage_when_streaming() -> None:
    assert json.loads(VllmOpenAIFormat("llama").request_body("Hi", STREAM)) == {
        "model": "llama",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert json.loads(VllmOpenAIFormat().request_body("Hi", ONCE)) == {
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "temperature": 0.0,
        "stream": False,
    }


def test_a_custom_template_gets_typed_values_and_an_escaped_prompt() -> None:
    template = (
        '{"text_inputs": "{prompt}", "max_length": "{max_new_tokens}", "temperature": "{temperature}", '
        '"top_p": "{top_p}", "note": "len={max_new_tokens} for {prompt}", "fixed": [1, true, null]}'
    )
    fmt = CustomFormat(template, "generated_text")
    prompt = 'He said "hi"\nand {left}'
    assert json.loads(fmt.request_body(prompt, STREAM)) == {
        "text_inputs": prompt,
        "max_length": 64,
        "temperature": 0.7,
        "top_p": 0.9,
        "note": f"len=64 for {prompt}",
        "fixed": [1, True, None],
    }
    assert json.loads(fmt.request_body("x", ONCE))["top_p"] is None


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ('{"inputs": {prompt}}', "not valid JSON"),
        ('{"inputs": "hello"}', "must contain the {prompt}"),
        ('{"inputs": "{prompt}", "n": "{max_tokens}"}', "unknown placeholder {max_tokens}"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        RequestTemplate(template)


# ------------------------------------------------------------------------------------------- answers


def test_lmi_answer_gives_text_and_generated_tokens() -> None:
    body = b'{"generated_text": " Paris.", "details": {"finish_reason": "length", "generated_tokens": 2}}'
    parsed = LmiFormat().parse_response(body)
    assert (parsed.text, parsed.prompt_tokens, parsed.completion_tokens) == (" Paris.", None, 2)
    assert LmiFormat().parse_response(b'{"generated_text": "x"}').completion_tokens is None


def test_tgi_answer_is_a_one_element_array() -> None:
    body = (
        b'[{"generated_text": " Paris.", "details": {"finish_reason": "eos_token", "generated_tokens": 3}}]'
    )
    parsed = TgiFormat().parse_response(body)
    assert (parsed.text, parsed.completion_tokens) == (" Paris.", 3)


def test_vllm_openai_answer_gives_text_and_usage() -> None:
    body = (
        b'{"choices": [{"message": {"role": "assistant", "content": " Paris."}, "finish_reason": "stop"}],'
        b' "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}'
    )
    parsed = VllmOpenAIFormat().parse_response(body)
    assert (parsed.text, parsed.prompt_tokens, parsed.completion_tokens) == (" Paris.", 9, 2)


@pytest.mark.parametrize(
    ("path", "body", "text"),
    [
        ("generated_text", {"generated_text": "a"}, "a"),
        ("[0].generated_text", [{"generated_text": "b"}], "b"),
        ("$.choices.0.message.content", {"choices": [{"message": {"content": "c"}}]}, "c"),
        ("choices[0].text", {"choices": [{"text": "d"}]}, "d"),
        ("outputs", {"outputs": ["e", "f"]}, "ef"),
    ],
)
def test_custom_answers_are_read_at_the_text_path(path: str, body: object, text: str) -> None:
    assert CustomFormat('{"q": "{prompt}"}', path).parse_response(json.dumps(body).encode()).text == text


def test_answers_without_the_promised_shape_are_format_errors() -> None:
    with pytest.raises(PayloadFormatError):
        LmiFormat().parse_response(b'{"outputs": ["x"]}')
    with pytest.raises(PayloadFormatError):
        CustomFormat('{"q": "{prompt}"}', "generated_text").parse_response(b'{"other": 1}')
    with pytest.raises(ValueError):
        TgiFormat().parse_response(b'[{"generated_text": "cut')
    with pytest.raises(GenerationFailedError):
        LmiFormat().parse_response(b'{"generated_text": "", "details": {"finish_reason": "error"}}')


@pytest.mark.parametrize("path", ["", "a..b", "a.", "a[x]", "a[0]b"])
def test_unreadable_text_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        TextPath(path)


# ------------------------------------------------------------------------------------------- streams


@pytest.mark.parametrize("part_bytes", [1, 5, 17, 1000])
def test_lmi_lines_decode_however_parts_split_or_join_them(part_bytes: int) -> None:
    pieces, decoder = decode(LmiFormat(), every_split(b"".join(LMI_LINES), part_bytes))
    assert [piece for group in pieces for piece in group] == ["Deep", " Learning", " rocks"]
    assert (decoder.complete, decoder.prompt_tokens, decoder.completion_tokens) == (True, None, 3)


def test_each_line_that_a_part_completes_is_one_piece() -> None:
    # A part joining two lines and starting a third gives two pieces; the part that ends the third, one.
    joined = LMI_LINES[0] + LMI_LINES[1] + LMI_LINES[2][:10]
    pieces, decoder = decode(LmiFormat(), [joined, LMI_LINES[2][10:]])
    assert pieces == [["Deep", " Learning"], [" rocks"], []]
    assert decoder.complete


def test_lmi_end_of_stream_is_the_line_with_generated_text() -> None:
    _, decoder = decode(LmiFormat(), LMI_LINES[:2])
    assert not decoder.complete
    assert decoder.data_lines == 2


def test_lmi_last_line_without_newline_is_still_read() -> None:
    pieces, decoder = decode(LmiFormat(), [*LMI_LINES[:2], LMI_LINES[2].rstrip(b"\n")])
    assert pieces[-1] == [" rocks"]
    assert decoder.complete


def test_lmi_error_line_is_a_generation_failure() -> None:
    error_line = (
        b'{"token": {"id": -1, "text": "", "log_prob": -1, "special_token": true}, "generated_text": "", '
        b'"details": {"finish_reason": "error", "generated_tokens": null, "inputs": null}}\n'
    )
    decoder = LmiFormat().stream_decoder()
    decoder.feed(LMI_LINES[0])
    with pytest.raises(GenerationFailedError, match="finish_reason 'error'"):
        decoder.feed(error_line)


@pytest.mark.parametrize("part_bytes", [3, 64, 4096])
def test_tgi_events_decode_with_usage_and_without_special_tokens(part_bytes: int) -> None:
    pieces, decoder = decode(TgiFormat(), every_split(b"".join(TGI_EVENTS), part_bytes))
    assert [piece for group in pieces for piece in group] == ["Deep", " Learning", " rocks"]
    assert (decoder.complete, decoder.prompt_tokens, decoder.completion_tokens) == (True, 5, 4)


def test_tgi_error_event_is_a_generation_failure() -> None:
    decoder = TgiFormat().stream_decoder()
    with pytest.raises(GenerationFailedError, match="generation: Request failed during generation"):
        decoder.feed(b'data:{"error":"Request failed during generation","error_type":"generation"}\n\n')


@pytest.mark.parametrize("part_bytes", [2, 50, 4096])
def test_openai_chunks_inside_payload_parts_decode_with_usage(part_bytes: int) -> None:
    pieces, decoder = decode(VllmOpenAIFormat(), every_split(b"".join(OPENAI_EVENTS), part_bytes))
    assert [piece for group in pieces for piece in group] == ["Deep", " Learning", " rocks"]
    assert (decoder.complete, decoder.prompt_tokens, decoder.completion_tokens) == (True, 5, 3)


def test_sse_comments_and_other_fields_are_skipped() -> None:
    decoder = VllmOpenAIFormat().stream_decoder()
    assert decoder.feed(b": keep-alive\r\nevent: message\r\nid: 7\r\n\r\n") == []
    assert decoder.feed(OPENAI_EVENTS[0].replace(b"\n", b"\r\n")) == ["Deep"]


def test_custom_stream_takes_the_path_from_each_line() -> None:
    fmt = CustomFormat('{"q": "{prompt}"}', "token.text")
    pieces, decoder = decode(fmt, every_split(b"".join(LMI_LINES), 9))
    assert [piece for group in pieces for piece in group] == ["Deep", " Learning", " rocks"]
    assert not decoder.has_end_marker


def test_a_line_that_is_not_json_is_a_format_error() -> None:
    decoder = LmiFormat().stream_decoder()
    with pytest.raises(ValueError):
        decoder.feed(b'{"token": {"id": 1, "text": \n')


def test_an_endless_line_is_refused_rather_than_buffered() -> None:
    decoder = LmiFormat().stream_decoder()
    with pytest.raises(PayloadFormatError, match="longer than"):
        decoder.feed(b"x" * (2 << 20))


# ------------------------------------------------------------------------------------ target config


def sagemaker_target(**fields: object) -> SageMakerTarget:
    return SageMakerTarget.model_validate(
        {"name": "s", "platform": "sagemaker", "endpoint_name": "ep", **fields}
    )


def test_custom_format_needs_both_template_and_path() -> None:
    with pytest.raises(ValidationError, match="needs request_template and response_text_path"):
        sagemaker_target(payload_format="custom")
    with pytest.raises(ValidationError, match="needs response_text_path"):
        sagemaker_target(payload_format="custom", request_template='{"inputs": "{prompt}"}')
    with pytest.raises(ValidationError, match="must contain the"):
        sagemaker_target(payload_format="custom", request_template='{"inputs": "x"}', response_text_path="a")
    with pytest.raises(ValidationError, match="only apply to payload_format custom"):
        sagemaker_target(payload_format="tgi", response_text_path="generated_text")


def test_a_complete_custom_target_builds_its_format() -> None:
    target = sagemaker_target(
        payload_format="custom",
        request_template='{"inputs": "{prompt}"}',
        response_text_path="[0].generated_text",
        region="eu-west-1",
        endpoint_url="https://runtime.sagemaker.eu-west-1.amazonaws.com/",
    )
    assert target.endpoint_url == "https://runtime.sagemaker.eu-west-1.amazonaws.com"
    fmt = payload_format(
        target.payload_format,
        request_template=target.request_template,
        response_text_path=target.response_text_path,
    )
    assert isinstance(fmt, CustomFormat) and fmt.path.segments == (0, "generated_text")


@pytest.mark.parametrize("fields", [{"region": "Europe"}, {"endpoint_url": "runtime.example.com"}])
def test_region_and_endpoint_url_are_checked(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        sagemaker_target(**fields)
