"""Event logs: keyfab's replay against tpm2_eventlog on real logs, the writer, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import re
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.attest.eventdata import describe, uefi_variable
from keyfab.attest.eventlog import (
    EV_EFI_HCRTM_EVENT,
    EV_NO_ACTION,
    MAX_EVENT_DATA,
    MAX_EVENTS,
    MAX_LOG_BYTES,
    EventLogBuilder,
    parse_eventlog,
    replay,
)
from keyfab.errors import VerificationError
from tests.attest.conftest import (
    LOG_NAMES,
    oracle_event_count,
    oracle_pcrs,
    real_log,
    tpm2_eventlog,
)

EV_POST_CODE, EV_SEPARATOR, EV_IPL = 0x1, 0x4, 0xD
SHA1, SHA256, SHA384 = 0x0004, 0x000B, 0x000C
LOCALITY_3 = b"StartupLocality\x00\x03"


def hexed(pcrs: dict[str, dict[int, bytes]]) -> dict[str, dict[int, str]]:
    return {
        bank: {pcr: value.hex() for pcr, value in values.items()} for bank, values in pcrs.items()
    }


def extended(start: bytes, *digests: bytes, bank: str = "sha256") -> bytes:
    """A PCR extended by hand: the TPM's rule, new = H(old || digest)."""
    for digest in digests:
        start = hashlib.new(bank, start + digest).digest()
    return start


# --- the real logs, judged by tpm2_eventlog -------------------------------------------


def test_eventlog_replay_equals_tpm2_eventlog(log_path: Path) -> None:
    output = tpm2_eventlog(log_path)
    log = parse_eventlog(log_path.read_bytes())
    assert hexed(replay(log)) == oracle_pcrs(output)
    assert len(log.events) == oracle_event_count(output)


def test_eventlog_formats_of_the_real_logs() -> None:
    agile = parse_eventlog(real_log("event-arch-linux.bin").read_bytes())
    assert (agile.crypto_agile, agile.banks) == (True, ("sha1", "sha256"))
    header = agile.events[0]
    assert (header.index, header.pcr, header.type_name, describe(header)) == (
        0,
        0,
        "EV_NO_ACTION",
        "Spec ID Event03",
    )
    assert all(set(event.digests) == {"sha1", "sha256"} for event in agile.events[1:])
    sha1 = parse_eventlog(real_log("event-uefi-sha1-log.bin").read_bytes())
    assert (sha1.crypto_agile, sha1.banks, sha1.events[0].type_name) == (
        False,
        ("sha1",),
        "EV_S_CRTM_VERSION",
    )


def test_eventlog_uefi_variables_named_as_tpm2_eventlog_names_them(log_path: Path) -> None:
    output = tpm2_eventlog(log_path)
    expected = re.findall(r"^\s+UnicodeName: (.*)$", output, re.MULTILINE)
    variables = [uefi_variable(event) for event in parse_eventlog(log_path.read_bytes()).events]
    assert [v.name for v in variables if v is not None] == expected
    secure_boot = next(v for v in variables if v is not None)
    assert (secure_boot.name, str(secure_boot.vendor)) == (
        "SecureBoot",
        "8be4df61-93ca-11d2-aa0d-00e098032b8c",
    )


# --- the writer -------------------------------------------------------------------------


def test_eventlog_builder_log_replays_like_tpm2_eventlog(tmp_path: Path) -> None:
    builder = EventLogBuilder(banks=("sha1", "sha256", "sha384", "sha512"))
    measured = [
        (0, EV_POST_CODE, b"boot ROM 1.0"),
        (4, EV_IPL, b"u-boot.itb"),
        (4, EV_SEPARATOR, bytes(4)),
        (9, EV_IPL, b"config-1"),
    ]
    returned = [builder.extend(pcr, kind, data) for pcr, kind, data in measured]
    assert returned[1]["sha256"] == hashlib.sha256(b"u-boot.itb").digest()
    path = tmp_path / "built.bin"
    path.write_bytes(builder.to_bytes())
    output = tpm2_eventlog(path)
    log = parse_eventlog(path.read_bytes())
    assert log.banks == ("sha1", "sha256", "sha384", "sha512")
    assert hexed(replay(log)) == oracle_pcrs(output)
    assert replay(log)["sha256"][4] == extended(bytes(32), *(r["sha256"] for r in returned[1:3]))
    assert [(e.pcr, e.event_type, e.data) for e in log.events[1:]] == measured


def test_eventlog_builder_measured_bytes_differ_from_data() -> None:
    builder = EventLogBuilder(banks=("sha256",))
    digests = builder.extend(9, EV_IPL, b"/boot/kernel", measured=b"kernel image")
    event = parse_eventlog(builder.to_bytes()).events[1]
    assert digests["sha256"] == event.digests["sha256"] == hashlib.sha256(b"kernel image").digest()
    assert event.data == b"/boot/kernel"


@pytest.mark.parametrize("banks", [(), ("sha1", "sha1"), ("md5",)])
def test_eventlog_builder_refuses_bad_banks(banks: Sequence[str]) -> None:
    with pytest.raises(ValueError, match="banks must be distinct"):
        EventLogBuilder(banks=banks)


@given(
    st.lists(
        st.tuples(
            st.integers(0, 23), st.sampled_from([1, 4, 5, 13, 0x80000001]), st.binary(max_size=40)
        ),
        max_size=20,
    )
)
@settings(max_examples=100)
def test_eventlog_builder_round_trip(events: list[tuple[int, int, bytes]]) -> None:
    builder = EventLogBuilder(banks=("sha1", "sha256"))
    expected: dict[str, dict[int, bytes]] = {"sha1": {}, "sha256": {}}
    for pcr, kind, data in events:
        for bank, digest in builder.extend(pcr, kind, data).items():
            old = expected[bank].get(pcr, bytes(len(digest)))
            expected[bank][pcr] = hashlib.new(bank, old + digest).digest()
    log = parse_eventlog(builder.to_bytes())
    assert [(e.pcr, e.event_type, e.data) for e in log.events[1:]] == events
    assert replay(log) == expected


# --- replay rules -----------------------------------------------------------------------


def test_eventlog_startup_locality_starts_pcr0() -> None:
    builder = EventLogBuilder(banks=("sha1", "sha256"))
    assert builder.extend(0, EV_NO_ACTION, LOCALITY_3) == {}
    digest = builder.extend(0, EV_POST_CODE, b"crtm")["sha256"]
    log = parse_eventlog(builder.to_bytes())
    assert describe(log.events[1]) == "StartupLocality 3"
    assert replay(log)["sha256"][0] == extended(bytes(31) + b"\x03", digest)


def test_eventlog_startup_locality_alone_sets_pcr0() -> None:
    builder = EventLogBuilder(banks=("sha256",))
    builder.extend(0, EV_NO_ACTION, LOCALITY_3)
    assert replay(parse_eventlog(builder.to_bytes())) == {"sha256": {0: bytes(31) + b"\x03"}}


def test_eventlog_hcrtm_event_starts_pcr0_at_locality_4() -> None:
    builder = EventLogBuilder(banks=("sha256",))
    builder.extend(0, EV_NO_ACTION, LOCALITY_3)  # ignored: the H-CRTM started PCR 0
    digest = builder.extend(0, EV_EFI_HCRTM_EVENT, b"HCRTM")["sha256"]
    assert replay(parse_eventlog(builder.to_bytes()))["sha256"][0] == extended(
        bytes(31) + b"\x04", digest
    )


def test_eventlog_no_action_is_never_extended() -> None:
    builder = EventLogBuilder(banks=("sha256",))
    builder.extend(7, EV_NO_ACTION, b"a note")
    builder.extend(0, EV_NO_ACTION, b"StartupLocality\x00\x03 too long")
    assert replay(parse_eventlog(builder.to_bytes())) == {"sha256": {}}


# --- bad input, each with its message ---------------------------------------------------


def spec_id(algorithms: Sequence[tuple[int, int]], *, count: int | None = None) -> bytes:
    """A header event listing ``algorithms`` as (TPM_ALG_ID, digest size)."""
    number = len(algorithms) if count is None else count
    body = b"Spec ID Event03\x00" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, number)
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms) + b"\x00"
    return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(body)) + body


def event2(
    digests: Sequence[tuple[int, bytes]],
    *,
    pcr: int = 1,
    data: bytes = b"x",
    count: int | None = None,
    size: int | None = None,
) -> bytes:
    number = len(digests) if count is None else count
    body = b"".join(struct.pack("<H", alg) + digest for alg, digest in digests)
    length = len(data) if size is None else size
    return struct.pack("<III", pcr, EV_POST_CODE, number) + body + struct.pack("<I", length) + data


HEADER = spec_id([(SHA1, 20), (SHA256, 32)])
GOOD = [(SHA1, bytes(20)), (SHA256, bytes(32))]


@pytest.mark.parametrize(
    ("log", "message"),
    [
        (b"", "event log: empty"),
        (bytes(MAX_LOG_BYTES + 1), f"event log: {MAX_LOG_BYTES + 1} bytes, more than"),
        (HEADER[:20], "event log: event 0: event header runs past the end"),
        (HEADER + event2(GOOD)[:-1], "event log: event 1: event data runs past the end"),
        (HEADER + event2(GOOD) + b"\x01", "event log: event 2: event header runs past the end"),
        (
            HEADER + event2(GOOD, count=9),
            "event log: event 1: digest count 9 exceeds the 2 banks of the header",
        ),
        (
            HEADER + event2([(SHA384, bytes(48))]),
            "event log: event 1: digest algorithm 0x000c is not a bank of the header",
        ),
        (
            HEADER + event2([(SHA256, bytes(32)), (SHA256, bytes(32))]),
            "event log: event 1: two sha256 digests",
        ),
        (HEADER + event2(GOOD, pcr=24), "event log: event 1: PCR index 24 is not below 24"),
        (
            HEADER + event2(GOOD, size=MAX_EVENT_DATA + 1),
            f"event log: event 1: event size {MAX_EVENT_DATA + 1} exceeds {MAX_EVENT_DATA}",
        ),
        (
            HEADER + event2(GOOD, size=0xFFFFFFFF),
            f"event log: event 1: event size 4294967295 exceeds {MAX_EVENT_DATA}",
        ),
        (
            HEADER + event2(GOOD)[:40],
            "event log: event 1: sha256 digest runs past the end",
        ),
        (spec_id([]), "event log: Spec ID event: 0 algorithms, expected 1 to 5"),
        (
            spec_id([(SHA1, 20)], count=6),
            "event log: Spec ID event: 6 algorithms, expected 1 to 5",
        ),
        (
            spec_id([(SHA1, 20)], count=2),
            "event log: Spec ID event: algorithmId runs past the end",
        ),
        (
            spec_id([(0x0099, 32)]),
            "event log: Spec ID event: unknown or repeated algorithm 0x0099",
        ),
        (
            spec_id([(SHA1, 20), (SHA1, 20)]),
            "event log: Spec ID event: unknown or repeated algorithm 0x0004",
        ),
        (
            spec_id([(SHA256, 20)]),
            "event log: Spec ID event: sha256 digest size 20, expected 32",
        ),
        (
            HEADER[:8] + b"\x01" + HEADER[9:],
            "event log: Spec ID event not in PCR 0 with a zero digest",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "log",
)
def test_eventlog_bad_input_refused_with_its_reason(log: bytes, message: str) -> None:
    with pytest.raises(VerificationError, match=re.escape(message)):
        parse_eventlog(log)


def test_eventlog_spec_id_trailing_bytes_refused() -> None:
    header = bytearray(spec_id([(SHA256, 32)]))
    header[28:32] = struct.pack("<I", int.from_bytes(header[28:32], "little") + 1)
    with pytest.raises(VerificationError, match="Spec ID event: 1 trailing bytes"):
        parse_eventlog(bytes(header) + b"\x00")


def test_eventlog_event_count_is_bounded() -> None:
    sha1_event = struct.pack("<II20sI", 1, EV_POST_CODE, bytes(20), 0)
    with pytest.raises(VerificationError, match=f"more than {MAX_EVENTS} events"):
        parse_eventlog(sha1_event * (MAX_EVENTS + 1))
    assert len(parse_eventlog(sha1_event * MAX_EVENTS).events) == MAX_EVENTS


# --- fuzzing: only VerificationError, from mutated real logs and random bytes -----------


def _real_logs() -> list[bytes]:
    return [real_log(name).read_bytes() for name in LOG_NAMES]


def _parse_and_replay(data: bytes) -> None:
    with contextlib.suppress(VerificationError):
        replay(parse_eventlog(data))


@st.composite
def mutated(draw: st.DrawFn, logs: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(logs)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "byte", "cut", "insert", "delete", "word"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "byte":
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:  # a size or count field set to an extreme
            data[at : at + 4] = draw(
                st.sampled_from([b"\xff\xff\xff\xff", bytes(4), b"\x09\0\0\0"])
            )
        if not data:
            break
    return bytes(data)


def test_eventlog_fuzz_mutated_real_logs() -> None:
    logs = _real_logs()

    @given(mutated(logs))
    @settings(max_examples=300, deadline=None)
    def fuzz(data: bytes) -> None:
        _parse_and_replay(data)

    fuzz()


@given(st.binary(max_size=2048))
@settings(max_examples=300)
def test_eventlog_fuzz_random_bytes(data: bytes) -> None:
    _parse_and_replay(data)


@given(st.binary(max_size=512))
@settings(max_examples=300)
def test_eventlog_fuzz_random_events_after_a_header(data: bytes) -> None:
    _parse_and_replay(HEADER + data)
