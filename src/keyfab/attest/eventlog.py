"""TCG PC Client "crypto agile" event logs: parse, replay, build (minimal).

The format (TCG PC Client Platform Firmware Profile, 10.2): a first
TCG_PCClientPCREvent in the SHA-1 layout whose data is the Spec ID event
("Spec ID Event03", the banks and their digest sizes), then TCG_PCR_EVENT2
records, each with one digest per bank. Everything is little-endian.

This is the attestation service's stand-in; the full parser (the older SHA-1
log too, every bank) replaces it with the same names. The log comes from the
network: every count and size is checked against what is left before use.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keyfab.errors import VerificationError

EV_NO_ACTION = 0x00000003
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
ALGORITHMS = {0x0004: "sha1", 0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
ALGORITHM_IDS = {name: alg for alg, name in ALGORITHMS.items()}
PCR_COUNT = 24
MAX_EVENTS = 10_000
MAX_EVENT_DATA = 1 << 20


@dataclass(frozen=True)
class Event:
    """One measurement: what went into which PCR, with a digest per bank."""

    index: int
    pcr: int
    event_type: int
    digests: Mapping[str, bytes]
    data: bytes


@dataclass(frozen=True)
class EventLog:
    events: Sequence[Event]
    banks: Mapping[str, int]  # bank name -> digest size, from the Spec ID event
    crypto_agile: bool = True


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.at:
            raise VerificationError(f"event log: {what} runs past the end")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def _spec_id(data: bytes) -> dict[str, int]:
    """The banks and digest sizes the Spec ID event announces."""
    r = _Reader(data)
    if r.take(16, "Spec ID signature") != SPEC_ID_SIGNATURE:
        raise VerificationError("event log: the first event is not a Spec ID Event03")
    r.take(8, "Spec ID header")  # platformClass, version, errata, uintnSize
    count = r.u32("numberOfAlgorithms")
    if not 1 <= count <= len(ALGORITHMS):
        raise VerificationError(f"event log: {count} algorithms in the Spec ID event")
    banks: dict[str, int] = {}
    for _ in range(count):
        alg, size = r.u16("algorithmId"), r.u16("digestSize")
        name = ALGORITHMS.get(alg)
        if name is None or hashlib.new(name).digest_size != size:
            raise VerificationError(f"event log: unknown algorithm {alg:#06x} of {size} bytes")
        banks[name] = size
    return banks


def _data(r: _Reader) -> bytes:
    size = r.u32("eventSize")
    if size > MAX_EVENT_DATA:
        raise VerificationError(f"event log: an event of {size} bytes")
    return r.take(size, "event data")


def _pcr(r: _Reader) -> int:
    pcr = r.u32("pcrIndex")
    if pcr >= PCR_COUNT:
        raise VerificationError(f"event log: PCR {pcr} does not exist")
    return pcr


def parse_eventlog(data: bytes) -> EventLog:
    """A crypto-agile log, or VerificationError naming what is wrong."""
    r = _Reader(data)
    pcr, event_type = _pcr(r), r.u32("eventType")
    r.take(20, "SHA-1 digest")
    first = _data(r)
    if event_type != EV_NO_ACTION:
        raise VerificationError("event log: not crypto agile (no Spec ID event first)")
    banks = _spec_id(first)
    events = [Event(0, pcr, event_type, {}, first)]
    while r.left:
        if len(events) > MAX_EVENTS:
            raise VerificationError(f"event log: more than {MAX_EVENTS} events")
        pcr, event_type = _pcr(r), r.u32("eventType")
        count = r.u32("digests.count")
        if count != len(banks):
            raise VerificationError(f"event log: event {len(events)} has {count} digests")
        digests: dict[str, bytes] = {}
        for _ in range(count):
            name = ALGORITHMS.get(r.u16("hashAlg"))
            if name not in banks or name in digests:
                raise VerificationError(f"event log: event {len(events)} has a wrong digest")
            digests[name] = r.take(banks[name], "digest")
        events.append(Event(len(events), pcr, event_type, digests, _data(r)))
    return EventLog(tuple(events), banks)


def replay(log: EventLog) -> dict[str, dict[int, bytes]]:
    """Each bank's PCR values after extending every event in order (EV_NO_ACTION skipped).

    Only PCRs the log touches appear; they start at zero, as after a reset.
    """
    pcrs: dict[str, dict[int, bytes]] = {bank: {} for bank in log.banks}
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue
        for bank, digest in event.digests.items():
            old = pcrs[bank].get(event.pcr, bytes(log.banks[bank]))
            pcrs[bank][event.pcr] = hashlib.new(bank, old + digest).digest()
    return pcrs


@dataclass
class EventLogBuilder:
    """Writes a crypto-agile log as a measured boot extends: tests, benchmarks, devices."""

    banks: Sequence[str] = ("sha256",)
    _records: list[bytes] = field(default_factory=list)

    def extend(self, pcr: int, event_type: int, data: bytes) -> dict[str, bytes]:
        """Record one measurement of ``data``; the digests to extend the TPM's PCR with."""
        digests = {bank: hashlib.new(bank, data).digest() for bank in self.banks}
        record = struct.pack("<III", pcr, event_type, len(digests))
        for bank, digest in digests.items():
            record += struct.pack("<H", ALGORITHM_IDS[bank]) + digest
        self._records.append(record + struct.pack("<I", len(data)) + data)
        return digests

    def to_bytes(self) -> bytes:
        spec = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(self.banks))
        for bank in self.banks:
            spec += struct.pack("<HH", ALGORITHM_IDS[bank], hashlib.new(bank).digest_size)
        spec += b"\x00"  # vendorInfoSize
        header = struct.pack("<II", 0, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec))
        return header + spec + b"".join(self._records)
