"""Encoder of the AWS event-stream binary framing, which the emulator's SageMaker and Bedrock streams speak.

botocore only decodes this framing, and the real decoder is what the emulator must satisfy, so the encoder
follows the layout botocore's ``EventStreamBuffer`` checks, field for field:

    prelude  total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes (uint32)
    headers  per header: name length (uint8) | name | value type (uint8) | value
    payload  raw bytes
    trailer  CRC32 of everything before it (uint32), the prelude CRC included

All integers are big-endian. Both CRCs are the ordinary CRC-32 (zlib's).
"""

from __future__ import annotations

import json
import struct
import uuid
import zlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

HeaderValue = bool | int | str | bytes | uuid.UUID | datetime

# Limits botocore's decoder enforces (or that the field widths impose): beyond them a frame is unreadable.
MAX_HEADER_NAME_BYTES = 255
MAX_HEADER_VALUE_BYTES = 65_535
MAX_HEADERS_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_PRELUDE_BYTES = _PRELUDE.size + _CRC.size
_TRAILER_BYTES = _CRC.size

# Header value types of the framing.
_TYPE_TRUE = 0
_TYPE_FALSE = 1
_TYPE_INT32 = 4
_TYPE_INT64 = 5
_TYPE_BYTES = 6
_TYPE_STRING = 7
_TYPE_TIMESTAMP = 8
_TYPE_UUID = 9
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class EventStreamEncodeError(ValueError):
    """A header or payload that the framing cannot carry."""


def _crc32(data: bytes, start: int = 0) -> int:
    return zlib.crc32(data, start) & 0xFFFFFFFF


def _encode_value(name: str, value: HeaderValue) -> bytes:
    # bool before int: True is an int to Python but has a type of its own on the wire.
    if isinstance(value, bool):
        return bytes([_TYPE_TRUE if value else _TYPE_FALSE])
    if isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            return struct.pack(">Bi", _TYPE_INT32, value)
        if _INT64_MIN <= value <= _INT64_MAX:
            return struct.pack(">Bq", _TYPE_INT64, value)
        raise EventStreamEncodeError(f"header {name!r}: integer {value} does not fit 64 bits")
    if isinstance(value, str | bytes):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if len(raw) > MAX_HEADER_VALUE_BYTES:
            raise EventStreamEncodeError(f"header {name!r}: value longer than {MAX_HEADER_VALUE_BYTES} bytes")
        kind = _TYPE_STRING if isinstance(value, str) else _TYPE_BYTES
        return struct.pack(">BH", kind, len(raw)) + raw
    if isinstance(value, uuid.UUID):
        return bytes([_TYPE_UUID]) + value.bytes
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise EventStreamEncodeError(f"header {name!r}: a timestamp needs a time zone")
        return struct.pack(">Bq", _TYPE_TIMESTAMP, round(value.timestamp() * 1000))
    raise EventStreamEncodeError(f"header {name!r}: unsupported value type {type(value).__name__}")


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    parts = []
    for name, value in headers.items():
        raw_name = name.encode("utf-8")
        if not 1 <= len(raw_name) <= MAX_HEADER_NAME_BYTES:
            raise EventStreamEncodeError(f"header name {name!r} must be 1-{MAX_HEADER_NAME_BYTES} bytes")
        parts.append(bytes([len(raw_name)]) + raw_name + _encode_value(name, value))
    encoded = b"".join(parts)
    if len(encoded) > MAX_HEADERS_BYTES:
        raise EventStreamEncodeError(f"headers longer than {MAX_HEADERS_BYTES} bytes")
    return encoded


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes = b"") -> bytes:
    """One complete frame: prelude, headers, payload and both CRCs."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise EventStreamEncodeError(f"payload longer than {MAX_PAYLOAD_BYTES} bytes")
    encoded_headers = encode_headers(headers)
    total_bytes = _PRELUDE_BYTES + len(encoded_headers) + len(payload) + _TRAILER_BYTES
    prelude = _PRELUDE.pack(total_bytes, len(encoded_headers))
    prelude_crc = _crc32(prelude)
    head = prelude + _CRC.pack(prelude_crc) + encoded_headers
    message_crc = _crc32(payload, _crc32(head))
    return head + payload + _CRC.pack(message_crc)


def event_message(event_type: str, payload: bytes, content_type: str = "application/octet-stream") -> bytes:
    """A frame of one event of a modelled stream (``:message-type`` = ``event``)."""
    headers = {":event-type": event_type, ":content-type": content_type, ":message-type": "event"}
    return encode_message(headers, payload)


def json_event_message(event_type: str, body: Mapping[str, Any]) -> bytes:
    return event_message(event_type, json.dumps(body, separators=(",", ":")).encode(), "application/json")


def exception_message(exception_type: str, body: Mapping[str, Any]) -> bytes:
    """A modelled error inside the stream; botocore raises it as an ``EventStreamError`` of that code."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps(body, separators=(",", ":")).encode())


def with_bad_message_crc(message: bytes) -> bytes:
    """The same frame with its trailing CRC flipped, as a frame damaged on the way would arrive."""
    (crc,) = _CRC.unpack(message[-_TRAILER_BYTES:])
    return message[:-_TRAILER_BYTES] + _CRC.pack(crc ^ 0xFFFFFFFF)
