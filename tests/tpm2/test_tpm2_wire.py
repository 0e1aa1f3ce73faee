"""The TPM structure parsers take hostile bytes: only VerificationError ever comes out."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyfab.attest import parse_attest, parse_public, parse_signature
from keyfab.attest._tpm2_crypto import kdf_a
from keyfab.errors import RotError, VerificationError
from keyfab.rot.tpm2._public import decode_public


def _attest(extra: bytes, name: bytes) -> bytes:
    head = (
        struct.pack(">IH", 0xFF544347, 0x8017)
        + struct.pack(">H", 0)
        + struct.pack(">H", len(extra))
    )
    clock = struct.pack(">QIIB", 1, 2, 3, 1) + struct.pack(">Q", 4)
    return head + extra + clock + struct.pack(">H", len(name)) + name + struct.pack(">H", 0)


@given(st.binary(max_size=64), st.binary(max_size=66))
def test_tpm2_wire_certify_round_trip(extra: bytes, name: bytes) -> None:
    attest = parse_attest(_attest(extra, name))
    assert (attest.extra_data, attest.name, attest.clock, attest.safe) == (extra, name, 1, True)


@given(st.binary(max_size=600))
def test_tpm2_wire_parsers_reject_garbage_cleanly(data: bytes) -> None:
    for parse in (parse_attest, parse_public, parse_signature):
        with contextlib.suppress(VerificationError):
            parse(data)


@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=199))
def test_tpm2_wire_truncation_is_detected(data: bytes, cut: int) -> None:
    full = _attest(b"n" * 8, data[:66])
    with pytest.raises(VerificationError, match="past the end"):
        parse_attest(full[: cut % len(full)])


def test_tpm2_wire_trailing_bytes_refused() -> None:
    with pytest.raises(VerificationError, match="1 trailing bytes"):
        parse_attest(_attest(b"", b"") + b"\x00")


def test_tpm2_kdfa_is_counter_mode_hmac() -> None:
    out = kdf_a(0x000B, b"k" * 32, b"STORAGE", b"u", b"v", 384)
    assert len(out) == 48
    assert out[:32] != out[32:]
    assert kdf_a(0x000B, b"k" * 32, b"STORAGE", b"u", b"v", 128) != out[:16]  # bits are hashed in


@given(st.binary(max_size=400))
def test_tpm2_driver_public_decoder_rejects_garbage_cleanly(data: bytes) -> None:
    with contextlib.suppress(RotError):  # UnsupportedError is a RotError
        decode_public(data)


def test_tpm2_driver_public_decoder_reads_an_rsa_area() -> None:
    modulus = (1 << 2047) | 0x10001  # odd, full size: cryptography accepts the numbers
    area = struct.pack(">HHIH", 0x0001, 0x000B, 0x00060072, 0) + struct.pack(
        ">HHHI", 0x10, 0x10, 2048, 0
    )
    area += struct.pack(">H", 256) + modulus.to_bytes(256, "big")
    attributes, key = decode_public(area)
    assert attributes == 0x00060072
    assert key.public_numbers().n == modulus  # type: ignore[union-attr]
