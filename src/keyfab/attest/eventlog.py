"""TCG PC Client boot event logs: parse, replay to PCR values, write.

A device's firmware logs each measurement it extends into a PCR; replaying the
log recomputes the PCRs, which a verifier then compares with a signed quote.
The format is the TCG PC Client Platform Firmware Profile's (PFP 1.05, §10):
the first event is always a SHA-1 ``TCG_PCClientPCREvent``; if it carries the
"Spec ID Event03" (``TCG_EfiSpecIDEvent``) the log is "crypto agile" and every
later event is a ``TCG_PCR_EVENT2`` with one digest per bank the header lists,
otherwise the whole log is in the older SHA-1-only format. Integers are
little-endian (firmware writes them as the CPU stores them).

The bytes come from the device being judged, so the parser is strict and
linear: the log's size, the number of events and each event's data are
bounded before anything is read, every length is checked against what is
left, digests must belong to the header's banks (with its sizes), and any
fault is one :class:`~keyfab.errors.VerificationError` line saying where.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from keyfab.attest._tpm2_wire import Reader
from keyfab.errors import VerificationError

MAX_LOG_BYTES = 1 << 20  # firmware reserves 64 KiB or so; Windows logs reach a few 100 KiB
MAX_EVENTS = 10_000  # a long GRUB boot logs a few hundred
MAX_EVENT_DATA = 256 * 1024  # the largest are UEFI db/dbx variables, tens of KiB
PCR_COUNT = 24

# TPM_ALG_ID → (bank name, digest size): the banks a PC Client TPM may have.
BANKS: Mapping[int, tuple[str, int]] = {
    0x0004: ("sha1", 20),
    0x000B: ("sha256", 32),
    0x000C: ("sha384", 48),
    0x000D: ("sha512", 64),
    0x0012: ("sm3_256", 32),
}
_ALG_IDS = {name: alg for alg, (name, _) in BANKS.items()}
_SIZES = dict(BANKS.values())
_HASHLIB_NAMES = {"sm3_256": "sm3"}
_DIGEST_FIELDS = {name: f"{name} digest" for name in _SIZES}
_SHA1_HEAD = struct.Struct("<II20s")  # pcrIndex, eventType, SHA-1 digest
_EVENT2_HEAD = struct.Struct("<III")  # pcrIndex, eventType, digest count

EV_NO_ACTION = 0x3
EV_EFI_HCRTM_EVENT = 0x80000010
SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\x00"
_HCRTM_LOCALITY = 4  # TPM2_HashStart/End at locality 4 start PCR 0 at 0...04

EVENT_TYPES: Mapping[int, str] = {
    0x00000000: "EV_PREBOOT_CERT",
    0x00000001: "EV_POST_CODE",
    0x00000002: "EV_UNUSED",
    0x00000003: "EV_NO_ACTION",
    0x00000004: "EV_SEPARATOR",
    0x00000005: "EV_ACTION",
    0x00000006: "EV_EVENT_TAG",
    0x00000007: "EV_S_CRTM_CONTENTS",
    0x00000008: "EV_S_CRTM_VERSION",
    0x00000009: "EV_CPU_MICROCODE",
    0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
    0x0000000B: "EV_TABLE_OF_DEVICES",
    0x0000000C: "EV_COMPACT_HASH",
    0x0000000D: "EV_IPL",
    0x0000000E: "EV_IPL_PARTITION_DATA",
    0x0000000F: "EV_NONHOST_CODE",
    0x00000010: "EV_NONHOST_CONFIG",
    0x00000011: "EV_NONHOST_INFO",
    0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000000: "EV_EFI_EVENT_BASE",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}


@dataclass(frozen=True)
class Event:
    """One logged measurement; ``index`` counts from the header event (0)."""

    index: int
    pcr: int
    event_type: int
    digests: Mapping[str, bytes]  # bank name → the digest extended into that bank
    data: bytes

    @property
    def type_name(self) -> str:
        return EVENT_TYPES.get(self.event_type, f"{self.event_type:#010x}")


@dataclass(frozen=True)
class EventLog:
    """A parsed log: its events (the header first) and the banks it covers."""

    events: tuple[Event, ...]
    banks: tuple[str, ...]
    crypto_agile: bool


def parse_eventlog(data: bytes) -> EventLog:
    """Parse a log in either format; VerificationError on anything malformed."""
    if len(data) > MAX_LOG_BYTES:
        raise VerificationError(f"event log: {len(data)} bytes, more than {MAX_LOG_BYTES}")
    if not data:
        raise VerificationError("event log: empty")
    reader = Reader(data, "event log", little_endian=True)
    header = _sha1_event(reader, 0)
    banks = _spec_id(header)
    if banks is None:
        return EventLog(_events(reader, header, _sha1_event), ("sha1",), crypto_agile=False)

    def agile(r: Reader, index: int) -> Event:
        return _agile_event(r, index, banks)

    names = tuple(name for name, _ in banks.values())
    return EventLog(_events(reader, header, agile), names, crypto_agile=True)


def _events(
    reader: Reader, header: Event, read: Callable[[Reader, int], Event]
) -> tuple[Event, ...]:
    events = [header]
    while reader.remaining:
        if len(events) == MAX_EVENTS:
            raise VerificationError(f"event log: more than {MAX_EVENTS} events")
        events.append(read(reader, len(events)))
    return tuple(events)


def _pcr(r: Reader, pcr: int) -> int:
    if pcr >= PCR_COUNT:
        raise r.error(f"PCR index {pcr} is not below {PCR_COUNT}")
    return pcr


def _event_data(r: Reader) -> bytes:
    size = r.u32("event size")
    if size > MAX_EVENT_DATA:
        raise r.error(f"event size {size} exceeds {MAX_EVENT_DATA}")
    return r.take(size, "event data")


def _sha1_event(r: Reader, index: int) -> Event:
    """A ``TCG_PCClientPCREvent``: the header event, or any event of a SHA-1 log."""
    r.what = f"event log: event {index}"
    pcr, event_type, digest = r.unpack(_SHA1_HEAD, "event header")
    digests = MappingProxyType({"sha1": digest})
    return Event(index, _pcr(r, pcr), event_type, digests, _event_data(r))


def _agile_event(r: Reader, index: int, banks: Mapping[int, tuple[str, int]]) -> Event:
    """A ``TCG_PCR_EVENT2``: a digest for (some of) the header's banks."""
    r.what = f"event log: event {index}"
    pcr, event_type, count = r.unpack(_EVENT2_HEAD, "event header")
    if count > len(banks):
        raise r.error(f"digest count {count} exceeds the {len(banks)} banks of the header")
    digests: dict[str, bytes] = {}
    for _ in range(count):
        algorithm = r.u16("digest algorithm")
        if algorithm not in banks:
            raise r.error(f"digest algorithm {algorithm:#06x} is not a bank of the header")
        name, size = banks[algorithm]
        if name in digests:
            raise r.error(f"two {name} digests")
        digests[name] = r.take(size, _DIGEST_FIELDS[name])
    return Event(index, _pcr(r, pcr), event_type, MappingProxyType(digests), _event_data(r))


def _spec_id(header: Event) -> dict[int, tuple[str, int]] | None:
    """The banks a "Spec ID Event03" header lists, or None for a SHA-1 log."""
    if header.event_type != EV_NO_ACTION or not header.data.startswith(SPEC_ID_SIGNATURE):
        return None
    if header.pcr != 0 or any(header.digests["sha1"]):
        raise VerificationError("event log: Spec ID event not in PCR 0 with a zero digest")
    r = Reader(header.data, "event log: Spec ID event", little_endian=True)
    r.take(len(SPEC_ID_SIGNATURE) + 8, "header")  # platform class, version, uintn size
    count = r.u32("numberOfAlgorithms")
    if not 0 < count <= len(BANKS):
        raise r.error(f"{count} algorithms, expected 1 to {len(BANKS)}")
    banks: dict[int, tuple[str, int]] = {}
    for _ in range(count):
        algorithm, size = r.u16("algorithmId"), r.u16("digestSize")
        if algorithm not in BANKS or algorithm in banks:
            raise r.error(f"unknown or repeated algorithm {algorithm:#06x}")
        if size != BANKS[algorithm][1]:
            name, expected = BANKS[algorithm]
            raise r.error(f"{name} digest size {size}, expected {expected}")
        banks[algorithm] = BANKS[algorithm]
    r.take(r.u8("vendorInfoSize"), "vendorInfo")
    r.end()
    return banks


def replay(log: EventLog) -> dict[str, dict[int, bytes]]:
    """Bank → PCR → the value the log's measurements extend it to.

    Every PCR starts at zeros, as after TPM2_Startup (PCRs 17-22 too: DRTM
    resets them to zeros before measuring, and tpm2_eventlog starts them
    there), except PCR 0, whose last byte is the locality the TPM started at:
    4 after an H-CRTM event (EV_EFI_HCRTM_EVENT), else the StartupLocality
    EV_NO_ACTION event's (PFP §10.4.5.3). EV_NO_ACTION events are never
    extended: the TPM never saw them (tpm2-tools 5.6 and later agree; 5.4,
    Debian's, extends their zero digests). A bank lists the PCRs the log
    extended, and PCR 0 when a locality set it.
    """
    locality = _startup_locality(log.events)
    values: dict[str, dict[int, bytes]] = {bank: {} for bank in log.banks}
    if locality:
        for bank in log.banks:
            values[bank][0] = bytes(_SIZES[bank] - 1) + bytes([locality])
    hashes = {bank: _hash(bank) for bank in log.banks}
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue
        for bank, digest in event.digests.items():
            pcrs = values[bank]
            old = pcrs.get(event.pcr) or bytes(len(digest))
            pcrs[event.pcr] = hashes[bank](old + digest)
    return values


def _startup_locality(events: Sequence[Event]) -> int:
    locality = 0
    for event in events:
        if event.pcr != 0 or event.event_type not in (EV_NO_ACTION, EV_EFI_HCRTM_EVENT):
            continue
        if event.event_type == EV_EFI_HCRTM_EVENT:
            return _HCRTM_LOCALITY
        data = event.data
        if len(data) == 17 and data.startswith(STARTUP_LOCALITY_SIGNATURE):
            locality = data[16]
    return locality


def _hash(bank: str) -> Callable[[bytes], bytes]:
    """The bank's digest function (hashlib's own constructor: replay is hot)."""
    name = _HASHLIB_NAMES.get(bank, bank)
    try:
        hashlib.new(name)
    except ValueError:
        raise VerificationError(f"event log: no {bank} hash in this Python's OpenSSL") from None
    constructor = getattr(hashlib, name, None) or functools.partial(hashlib.new, name)
    return lambda data: constructor(data).digest()


class EventLogBuilder:
    """Writes a crypto-agile log as a measured boot extends, event by event.

    ``extend`` logs a measurement and returns the digests to extend the TPM's
    PCRs with, one per bank, so the log and the TPM cannot drift apart. The
    digest is of ``data`` itself, or of ``measured`` when the event data only
    describes what was measured (a kernel image measured, its path logged).
    """

    def __init__(self, banks: Sequence[str] = ("sha1", "sha256")) -> None:
        if not banks or len(set(banks)) != len(banks) or not set(banks) <= set(_ALG_IDS):
            raise ValueError(f"banks must be distinct names among {', '.join(_ALG_IDS)}")
        self._banks = tuple(banks)
        self._hashes = {bank: _hash(bank) for bank in self._banks}
        self._chunks = [self._header()]

    def _header(self) -> bytes:
        spec_id = SPEC_ID_SIGNATURE + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(self._banks))
        for bank in self._banks:
            spec_id += struct.pack("<HH", _ALG_IDS[bank], _SIZES[bank])
        spec_id += b"\x00"  # no vendor information
        return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(spec_id)) + spec_id

    def extend(
        self, pcr: int, event_type: int, data: bytes, *, measured: bytes | None = None
    ) -> Mapping[str, bytes]:
        """Log one event; the digests to extend ``pcr`` with (none for EV_NO_ACTION)."""
        if not 0 <= pcr < PCR_COUNT or not 0 <= event_type < 1 << 32:
            raise ValueError(f"PCR {pcr} or event type {event_type} out of range")
        if event_type == EV_NO_ACTION:  # logged with zero digests, never extended
            digests = {bank: bytes(_SIZES[bank]) for bank in self._banks}
        else:
            content = data if measured is None else measured
            digests = {bank: self._hashes[bank](content) for bank in self._banks}
        body = b"".join(struct.pack("<H", _ALG_IDS[b]) + d for b, d in digests.items())
        head = struct.pack("<III", pcr, event_type, len(digests))
        self._chunks.append(head + body + struct.pack("<I", len(data)) + data)
        return MappingProxyType({} if event_type == EV_NO_ACTION else digests)

    def to_bytes(self) -> bytes:
        return b"".join(self._chunks)
