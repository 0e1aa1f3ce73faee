"""Evaluating an attestation policy: quoted PCRs and an event log against reference values.

Each reason names exactly what failed ("PCR 8: value 3f…, expected one of
release 1.4.2, 1.4.3"); no reasons means trusted. Events are believed only
on PCRs the quote covers and only once the log replays to the quoted values
in the policy's bank: an unquoted or unreplayable event proves nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from keyfab.attest.eventdata import uefi_variable
from keyfab.attest.eventlog import Event, EventLog, replay
from keyfab.attest.reference import RELEASE_PCRS, NoEventType, Policy, Rule


class ReleaseRecord(Protocol):
    """What a verdict reads of a recorded release (a ``registry.Release`` row has it)."""

    @property
    def product(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def measurements(self) -> str: ...


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

Replayed = Mapping[str, Mapping[int, bytes]]
"""bank -> PCR -> value, as ``eventlog.replay`` gives it."""
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
    releases: Sequence[ReleaseRecord],
    replayed: Replayed | None = None,
) -> list[str]:
    """Why the evidence fails the policy (empty: trusted). ``pcrs``: the quoted values;
    ``replayed``: ``replay(log)`` when the caller has it already."""
    configurations = release_configurations(policy, releases)
    reasons = [f"PCR {i}: not in the quote" for i in policy.attestation.pcrs if i not in pcrs]
    reasons += _pcr_values(policy, pcrs, configurations)
    if log is not None:
        reasons += _replay_mismatches(policy, pcrs, log, replayed or replay(log))
    if not policy.rule or reasons:
        return reasons
    if log is None:
        return ["event log: none given, and the policy has rules over events"]
    events = [e for e in log.events if e.pcr in policy.attestation.pcrs]
    for rule in policy.rule:
        reasons += _RULES[rule.kind](rule, events, policy, configurations)
    return reasons


def release_configurations(
    policy: Policy, releases: Iterable[ReleaseRecord]
) -> list[Configuration]:
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


def _replay_mismatches(
    policy: Policy, pcrs: Mapping[int, bytes], log: EventLog, replayed: Replayed
) -> list[str]:
    """The quoted PCRs of the policy's selection that the log does not replay to."""
    bank = policy.attestation.bank
    if bank not in log.banks:
        return [f"event log: no {bank} bank"]
    values, zero = replayed[bank], bytes(hashlib.new(bank).digest_size)
    return [
        f"PCR {i}: the event log replays to {short(values.get(i, zero))}, "
        f"the quote has {short(pcrs[i])}"
        for i in policy.attestation.pcrs
        if i in pcrs and values.get(i, zero) != pcrs[i]
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
        variable = uefi_variable(event)
        if variable is None:
            return [f"event {event.index} (PCR 7): malformed UEFI variable data"]
        if variable.vendor.bytes_le == EFI_GLOBAL_VARIABLE and variable.name == "SecureBoot":
            value = variable.value
            if value == b"\x01":
                return []
            return [f"secure boot: SecureBoot = {value.hex() or 'empty'} (event {event.index})"]
    return ["secure boot: no SecureBoot variable measured in PCR 7"]


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
