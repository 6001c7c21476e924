"""The emulator's event-stream encoder, checked by botocore's own decoder (the one real clients run)."""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from datetime import UTC, datetime

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage

from fmbench.emulator.eventstream import (
    MAX_HEADER_VALUE_BYTES,
    EventStreamEncodeError,
    encode_message,
    event_message,
    exception_message,
    json_event_message,
    with_bad_message_crc,
)


def decode_all(data: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


def test_a_payload_part_round_trips_with_its_headers_and_payload() -> None:
    payload = b'{"token": {"text": " Paris"}}\n'
    (message,) = decode_all(event_message("PayloadPart", payload))
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert message.payload == payload


def test_the_prelude_and_both_crcs_are_what_the_format_says() -> None:
    frame = encode_message({":message-type": "event"}, b"abc")
    total_bytes, headers_bytes, prelude_crc = struct.unpack(">III", frame[:12])
    assert total_bytes == len(frame)
    assert headers_bytes == len(frame) - 12 - 3 - 4
    assert prelude_crc == zlib.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])
    (message,) = decode_all(frame)
    assert message.prelude.crc == prelude_crc
    assert message.crc == zlib.crc32(frame[:-4])


def test_every_header_type_round_trips() -> None:
    stamp = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    an_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {
        "yes": True,
        "no": False,
        "small": -7,
        "int32-max": 2**31 - 1,
        "big": 2**40,
        "text": "héllo",
        "blob": b"\x00\x01\xff",
        "when": stamp,
        "id": an_id,
    }
    (message,) = decode_all(encode_message(headers, b""))
    assert message.headers == {
        "yes": True,
        "no": False,
        "small": -7,
        "int32-max": 2**31 - 1,
        "big": 2**40,
        "text": "héllo",
        "blob": b"\x00\x01\xff",
        "when": round(stamp.timestamp() * 1000),  # botocore returns timestamps as epoch milliseconds
        "id": an_id.bytes,
    }
    assert message.payload == b""


def test_frames_decode_one_by_one_however_the_bytes_arrive() -> None:
    frames = [json_event_message("contentBlockDelta", {"delta": {"text": f" t{i}"}}) for i in range(5)]
    stream = b"".join(frames)
    buffer = EventStreamBuffer()
    decoded = []
    for start in range(0, len(stream), 7):  # 7-byte pieces split every frame somewhere
        buffer.add_data(stream[start : start + 7])
        decoded += list(buffer)
    assert [json.loads(m.payload)["delta"]["text"] for m in decoded] == [f" t{i}" for i in range(5)]
    assert {m.headers[":content-type"] for m in decoded} == {"application/json"}


def test_exception_frames_carry_the_exception_type() -> None:
    (message,) = decode_all(exception_message("throttlingException", {"message": "slow down"}))
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "throttlingException"
    assert json.loads(message.payload) == {"message": "slow down"}
    assert message.to_response_dict()["status_code"] == 400  # what makes botocore raise it


def test_a_bad_message_crc_is_refused_by_the_decoder() -> None:
    frame = with_bad_message_crc(event_message("PayloadPart", b"data"))
    with pytest.raises(ChecksumMismatch):
        decode_all(frame)


@pytest.mark.parametrize(
    "headers",
    [
        {"": "empty name"},
        {"x" * 256: "name too long"},
        {"v": "x" * (MAX_HEADER_VALUE_BYTES + 1)},
        {"v": 2**64},
        {"v": datetime(2024, 1, 1)},  # a naive time: refused
        {"v": 1.5},
    ],
)
def test_headers_the_framing_cannot_carry_are_refused(headers: dict[str, object]) -> None:
    with pytest.raises(EventStreamEncodeError):
        encode_message(headers, b"")  # type: ignore[arg-type]
