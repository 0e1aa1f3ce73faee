"""The framing is a parser of untrusted bytes: only ProtocolError (or a value) comes out."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.agent import protocol


def test_round_trip_with_bytes() -> None:
    message = {"call": "sign", "args": {"message": b"\x00\xff", "label": "idevid", "n": None}}
    framed = protocol.encode(message)
    assert protocol.receive(io.BytesIO(framed), protocol.MAX_REQUEST) == message
    assert protocol.receive(io.BytesIO(b""), 100) is None


def test_truncated_and_oversized() -> None:
    framed = protocol.encode({"call": "random"})
    with pytest.raises(protocol.ProtocolError, match="mid-message"):
        protocol.receive(io.BytesIO(framed[:-1]), 1000)
    with pytest.raises(protocol.ProtocolError, match="larger than 4"):
        protocol.receive(io.BytesIO(framed), 4)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with contextlib.suppress(protocol.ProtocolError):
        protocol.receive(io.BytesIO(data), 256)
