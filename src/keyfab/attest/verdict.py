"""Evaluating an attestation policy: quoted PCRs and an event log against reference values.

Each reason names exactly what failed ("PCR 8: value 3f…, expected one of
release 1.4.2, 1.4.3"); no reasons means trusted. Events are believed only
on PCRs the quote covers and only once the log replays to the quoted values
in the policy's bank: an unquoted or unreplayable event proves nothing.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

from keyfab.attest.eventlog import Event, EventLog
from keyfab.attest.reference import RELEASE_PCRS, NoEventType, Policy, Rule
from keyfab.registry import Release

EV_NO_ACTION = 0x00000003
EV_TABLE_OF_DEVICES = 0x0000000B
EV_COMPACT_HASH = 0x0000000C
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
UBOOT_EVENTS = {
    (EV_COMPACT_HASH, b"linux\0"): "linux",
    (EV_COMPACT_HASH, b"initrd\0"): "initrd",
    (EV_TABLE_OF_DEVICES, b"dts\0"): "dts",
}
"""(event type, event data) -> what U-Boot's ``bootm_measure`` measured (see ``boot._measure``)."""
EFI_GLOBAL_VARIABLE = bytes.fromhex("61dfe48bca93d211aa0d00e098032b8c")
"""8BE4DF61-93CA-11D2-AA0D-00E098032B8C as UEFI writes a GUID (little-endian fields)."""
_STARTUP_LOCALITY = b"StartupLocality\0"

Configuration = tuple[str, Mapping[str, str]]
"""(release version, measured name -> hex digest in the policy's bank)."""


def short(digest: bytes | str) -> str:
    """The first 16 hex digits of a digest: enough to tell values apart in a reason."""
    text = digest.hex() if isinstance(digest, bytes) else digest
    return f"{text[:16]}…"


def evaluate(
    policy: Policy,
    *,
    pcrs: Mapping[int, bytes],
    log: EventLog | None,
    releases: Sequence[Release],
) -> list[str]:
    """Why the evidence fails the policy (empty: trusted). ``pcrs``: the quoted values."""
    configurations = release_configurations(policy, releases)
    reasons = [f"PCR {i}: not in the quote" for i in policy.attestation.pcrs if i not in pcrs]
    reasons += _pcr_values(policy, pcrs, configurations)
    if log is not None:
        reasons += _replay_mismatches(policy, pcrs, log)
    if not policy.rule or reasons:
        return reasons
    if log is None:
        return ["event log: none given, and the policy has rules over events"]
    events = [e for e in log.events if e.pcr in policy.attestation.pcrs]
    for rule in policy.rule:
        reasons += _RULES[rule.kind](rule, events, policy, configurations)
    return reasons


def release_configurations(policy: Policy, releases: Iterable[Release]) -> list[Configuration]:
    """Every configuration of the product's releases, in the policy's bank."""
    bank = policy.attestation.bank
    found: list[Configuration] = []
    for release in releases:
        if release.product != policy.product:
            continue
        for measured in json.loads(release.measurements).values():
            found.append((release.version, {name: d[bank] for name, d in measured.items()}))
    return found


def _versions(candidates: Iterable[tuple[str, object]]) -> str:
    versions = list(dict.fromkeys(version for version, _ in candidates))
    return "release " + ", ".join(versions) if versions else "a recorded release (none are)"


def _extend(value: bytes, digest: bytes, bank: str) -> bytes:
    return hashlib.new(bank, value + digest).digest()


def release_pcr_values(
    policy: Policy, configurations: Sequence[Configuration], index: int
) -> list[tuple[str, bytes]]:
    """(version, value) PCR ``index`` (8 or 9) holds after U-Boot measured each configuration."""
    bank = policy.attestation.bank
    zero = bytes(hashlib.new(bank).digest_size)
    name = RELEASE_PCRS[index]
    return [
        (v, _extend(zero, bytes.fromhex(m[name]), bank)) for v, m in configurations if name in m
    ]


def _pcr_values(
    policy: Policy, pcrs: Mapping[int, bytes], configurations: Sequence[Configuration]
) -> list[str]:
    reasons = []
    for index, values in policy.pcr.items():
        if index not in pcrs:
            continue
        value = pcrs[index]
        if values.releases:
            expected = release_pcr_values(policy, configurations, index)
            if not any(value == good for _, good in expected):
                reasons.append(
                    f"PCR {index}: value {short(value)}, expected one of {_versions(expected)}"
                )
        elif value.hex() not in {v.lower() for v in values.allowed}:
            allowed = ", ".join(short(v) for v in values.allowed)
            reasons.append(f"PCR {index}: value {short(value)}, expected one of {allowed}")
    return reasons


def _replay_mismatches(policy: Policy, pcrs: Mapping[int, bytes], log: EventLog) -> list[str]:
    """The quoted PCRs the log does not replay to, in the policy's bank.

    Only the policy's bank is folded here; the verifier also compares the
    whole replay with the quote. PCR 0 starts at the startup locality the log
    records (``EV_NO_ACTION`` "StartupLocality"), the others at zero.
    """
    bank = policy.attestation.bank
    size = hashlib.new(bank).digest_size
    values = {i: bytes(size) for i in policy.attestation.pcrs}
    for event in log.events:
        if event.pcr not in values:
            continue
        if event.event_type == EV_NO_ACTION:
            if event.pcr == 0 and event.data.startswith(_STARTUP_LOCALITY) and len(event.data) > 16:
                values[0] = bytes(size - 1) + event.data[16:17]
            continue
        digest = event.digests.get(bank)
        if digest is None:
            return [f"event {event.index}: no {bank} digest"]
        values[event.pcr] = _extend(values[event.pcr], digest, bank)
    return [
        f"PCR {i}: the event log replays to {short(v)}, the quote has {short(pcrs[i])}"
        for i, v in values.items()
        if i in pcrs and v != pcrs[i]
    ]


def _fit_release(
    rule: Rule, events: Sequence[Event], policy: Policy, configurations: Sequence[Configuration]
) -> list[str]:
    """What U-Boot measured (linux, initrd, dts) is, all together, one release configuration."""
    bank = policy.attestation.bank
    measured: dict[str, tuple[int, str]] = {}
    for event in events:
        name = UBOOT_EVENTS.get((event.event_type, event.data))
        if name is None:
            continue
        digest = event.digests[bank].hex()
        if name in measured and measured[name][1] != digest:
            return [f"PCR {event.pcr}: {name} measured twice with different values"]
        measured[name] = (event.pcr, digest)
    if "linux" not in measured:
        return ["fit-release: the event log has no U-Boot 'linux' measurement"]
    candidates = list(configurations)
    for name in ("linux", "initrd", "dts"):
        if name not in measured:
            continue
        pcr, digest = measured[name]
        matching = [c for c in candidates if c[1].get(name) == digest]
        if not matching:
            expected = _versions(candidates)
            return [f"PCR {pcr}: value {short(digest)} ({name}), expected one of {expected}"]
        candidates = matching
    return []


def _secure_boot(
    rule: Rule, events: Sequence[Event], policy: Policy, configurations: Sequence[Configuration]
) -> list[str]:
    """PCR 7 measured the SecureBoot variable (EFI global) with the value 1."""
    for event in events:
        if event.pcr != 7 or event.event_type != EV_EFI_VARIABLE_DRIVER_CONFIG:
            continue
        variable = uefi_variable(event.data)
        if variable is None:
            return [f"event {event.index} (PCR 7): malformed UEFI variable data"]
        guid, name, value = variable
        if guid == EFI_GLOBAL_VARIABLE and name == "SecureBoot":
            if value == b"\x01":
                return []
            return [f"secure boot: SecureBoot = {value.hex() or 'empty'} (event {event.index})"]
    return ["secure boot: no SecureBoot variable measured in PCR 7"]


def uefi_variable(data: bytes) -> tuple[bytes, str, bytes] | None:
    """(VendorGuid, name, value) of a UEFI_VARIABLE_DATA, or None when it does not parse.

    Lengths are checked against the bytes present before anything is sliced.
    """
    if len(data) < 32:
        return None
    name_chars, value_size = struct.unpack_from("<QQ", data, 16)
    if 32 + 2 * name_chars + value_size != len(data):
        return None
    end = 32 + 2 * name_chars
    try:
        name = data[32:end].decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    return data[:16], name, data[end:]


def _no_event_type(
    rule: Rule, events: Sequence[Event], policy: Policy, configurations: Sequence[Configuration]
) -> list[str]:
    """Events of a refused type (whose data holds ``data``, when given) are each a reason."""
    if not isinstance(rule, NoEventType):
        return []
    names = {t for t in rule.types if t.startswith("EV_")}
    numbers = {int(t, 16) for t in rule.types if t.startswith("0x")}
    needle = None if rule.data is None else rule.data.encode()
    suffix = "" if rule.data is None else f" with data {rule.data!r}"
    return [
        f"event {e.index} (PCR {e.pcr}): {e.type_name}{suffix} is not allowed"
        for e in events
        if (e.type_name in names or e.event_type in numbers)
        and (needle is None or needle in e.data)
    ]


_RULES: dict[str, Callable[[Rule, Sequence[Event], Policy, Sequence[Configuration]], list[str]]] = {
    "fit-release": _fit_release,
    "secure-boot": _secure_boot,
    "no-event-type": _no_event_type,
}
