"""The agent's wire format: a 4-byte big-endian length, then one JSON object.

Requests are ``{"call": NAME, "args": {...}}``; answers ``{"ok": RESULT}`` or
``{"error": ONE LINE, "kind": CLASS}``. Bytes travel as ``{"b64": "..."}``.
The length is checked against the limit before a byte of the body is read, so
an oversized or lying peer costs nothing but the four bytes.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Protocol

MAX_REQUEST = 2 << 20
"""A request's body: the largest input (1 MiB to lock) is ~1.4 MiB in base64."""
MAX_ANSWER = 4 << 20
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the framing: the connection is closed after one error answer."""


def encode(message: Any) -> bytes:
    body = _ENCODER.encode(message).encode()
    return _HEADER.pack(len(body)) + body


def _bytes(value: object) -> object:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot send {type(value).__name__}")


def decode(body: bytes) -> Any:
    try:
        return _DECODER.decode(body.decode())
    except (ValueError, RecursionError):
        raise ProtocolError("the message is not JSON") from None


def _unwrap(document: dict[str, Any]) -> Any:
    if len(document) == 1 and "b64" in document:
        value = document["b64"]
        if not isinstance(value, str):
            raise ProtocolError("b64 must be a string")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ProtocolError("b64 is not base64") from None
    return document


# one encoder and decoder for every message: json.dumps/loads with options build new ones per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_bytes)
_DECODER = json.JSONDecoder(object_hook=_unwrap)


class Reader(Protocol):
    def read(self, n: int, /) -> bytes: ...


def _exactly(reader: Reader, n: int) -> bytes | None:
    """``n`` bytes, or None if the peer closed before the first; ProtocolError if mid-way."""
    data = reader.read(n)
    if not data:
        return None
    if len(data) != n:
        raise ProtocolError("the peer closed mid-message")
    return data


def receive(reader: Reader, limit: int) -> Any:
    """The next message from a buffered reader (``sock.makefile("rb")``), or None at a
    clean end of stream."""
    header = _exactly(reader, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > limit:
        raise ProtocolError(f"message of {length} bytes is larger than {limit}")
    body = _exactly(reader, length) if length else b""
    if body is None:
        raise ProtocolError("the peer closed mid-message")
    return decode(body)
