"""The evidence document and the event log parser on untrusted bytes (bounded fuzzing)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.attest.eventlog import EventLogBuilder, parse_eventlog, replay
from keyfab.attest.evidence import MAX_EVIDENCE, AttestationEvidence, parse_evidence
from keyfab.errors import VerificationError

GOOD = AttestationEvidence(
    nonce=bytes(32),
    quote=b"q" * 100,
    signature=b"s" * 70,
    bank="sha256",
    pcrs={i: bytes([i]) * 32 for i in range(10)},
    eventlog=b"log",
)


def test_evidence_round_trip() -> None:
    assert parse_evidence(GOOD.to_json()) == GOOD


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "x"}, "is not a keyfab-attestation-v1"),
        ({"extra": 1}, "unknown field"),
        ({"nonce": "***"}, "nonce is not base64"),
        ({"nonce": "AA\u00e9="}, "nonce is not base64"),  # not ASCII: ValueError, not binascii
        ({"quote": "A" * 4000}, "quote must be base64 of at most"),
        ({"pcrs": {"sha256": {"24": "00" * 32}}}, "not a PCR index"),
        ({"pcrs": {"sha256": {"03": "00" * 32}}}, "not a PCR index"),
        ({"pcrs": {"sha256": {"\u0663": "00" * 32}}}, "not a PCR index"),  # Arabic-Indic 3
        ({"pcrs": {"sha256": {"0": "00"}}}, "PCR 0 is not a sha256 digest"),
        ({"pcrs": {"md5": {}}}, "unsupported PCR bank"),
        ({"pcrs": {}}, "exactly one bank"),
    ],
)
def test_evidence_refusals(change: dict[str, object], message: str) -> None:
    document = {**json.loads(GOOD.to_json()), **change}
    with pytest.raises(VerificationError, match=message):
        parse_evidence(json.dumps(document).encode())


def test_evidence_too_large() -> None:
    with pytest.raises(VerificationError, match="larger than"):
        parse_evidence(b" " * (MAX_EVIDENCE + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_evidence_fuzz_bytes(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        parse_evidence(data)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_evidence_fuzz_documents(value: object) -> None:
    document = {**json.loads(GOOD.to_json()), "pcrs": value}
    with contextlib.suppress(VerificationError):
        parse_evidence(json.dumps(document).encode())


def _log() -> bytes:
    builder = EventLogBuilder()
    for i in range(6):
        builder.extend(i % 3, 0xD, bytes([i]) * 5)
    return builder.to_bytes()


def test_eventlog_replays_what_it_extended() -> None:
    import hashlib

    builder = EventLogBuilder()
    digest = builder.extend(4, 0xD, b"u-boot")["sha256"]
    assert replay(parse_eventlog(builder.to_bytes()))["sha256"] == {
        4: hashlib.sha256(bytes(32) + digest).digest()
    }


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_eventlog_fuzz_mutations(data: st.DataObject) -> None:
    log = bytearray(_log())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(log) - 1))
        log[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(log)))
    with contextlib.suppress(VerificationError):
        replay(parse_eventlog(bytes(log[:cut])))
