"""Handing a product's fleet to Keylime: its tpm_policy, measured-boot refstate and runtime policy.

Keylime judges a boot in two places. Its verifier compares each quoted PCR
with a ``tpm_policy`` (allowed values per PCR), and its measured-boot engine
runs a named policy over the parsed event log with a reference state (the
"refstate"). The only UEFI policy Keylime ships, ``example``, pins a boot's
components (S-CRTM and firmware blobs, the Secure Boot state and keys, shim,
GRUB, kernel, initrd, command line) and refuses any event it does not know,
so its refstate is read from a golden boot of the product, as Keylime's own
``create_mb_refstate`` reads it. The golden boot must pass keyfab's policy
and have the shape the ``example`` engine accepts; whatever keyfab's policy
asks that Keylime cannot check is refused with one line, never exported
weaker. What maps to what: ``docs/attestation.md``, "Handing a fleet to Keylime".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from keyfab.attest._tpm2_wire import Reader
from keyfab.attest.eventdata import uefi_variable
from keyfab.attest.eventlog import Event, EventLog, replay
from keyfab.attest.reference import NoEventType, Policy
from keyfab.attest.verdict import evaluate, release_configurations, release_pcr_values
from keyfab.errors import ConfigError, VerificationError
from keyfab.registry import Release

EXAMPLE_EVENTS: dict[str, frozenset[int]] = {
    "EV_NO_ACTION": frozenset({0}),
    "EV_S_CRTM_VERSION": frozenset({0}),
    "EV_EFI_PLATFORM_FIRMWARE_BLOB": frozenset({0}),
    "EV_EFI_PLATFORM_FIRMWARE_BLOB2": frozenset({0}),
    "EV_CPU_MICROCODE": frozenset({1}),
    "EV_EFI_HANDOFF_TABLES": frozenset({1}),
    "EV_EFI_HANDOFF_TABLES2": frozenset({1}),
    "EV_EFI_VARIABLE_BOOT": frozenset({1}),
    "EV_PLATFORM_CONFIG_FLAGS": frozenset({1}),
    "EV_EFI_BOOT_SERVICES_DRIVER": frozenset({2}),
    "EV_EFI_BOOT_SERVICES_APPLICATION": frozenset({4}),
    "EV_EFI_GPT_EVENT": frozenset({5}),
    "EV_EFI_VARIABLE_DRIVER_CONFIG": frozenset({7}),
    "EV_EFI_VARIABLE_AUTHORITY": frozenset({7}),
    "EV_SEPARATOR": frozenset(range(8)),
    "EV_EFI_ACTION": frozenset({1, 4, 5}),
    "EV_IPL": frozenset({8, 9, 14}),
}
"""Event type -> the PCRs where Keylime 7's ``example`` policy accepts it (others: refused)."""
EXAMPLE_ACTIONS: dict[int, tuple[str, ...]] = {
    1: ("Entering ROM Based Setup",),
    4: (
        "Calling EFI Application from Boot Option",
        "Returning from EFI Application from Boot Option",
    ),
    5: (
        "Exit Boot Services Invocation",
        "Exit Boot Services Returned with Failure",
        "Exit Boot Services Returned with Success",
    ),
}
"""The only EV_EFI_ACTION texts ``example`` accepts, per PCR."""
_IPL_TEXTS = {
    8: re.compile(r"(grub_cmd|kernel_cmdline): .*", re.DOTALL),
    9: re.compile(r".*/(loader/entries|grub|vmlinuz|initrd|initramfs).*"),
    14: re.compile(r"MokList|MokListX|MokListTrusted"),
}
"""EV_IPL texts ``example`` knows (GRUB's commands and files, shim's MOK lists)."""
KEYLIME_RESERVED = {10: "Keylime's IMA PCR", 16: "Keylime's data PCR"}
EFI_GLOBAL = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
_KEY_VARIABLES = {(EFI_GLOBAL, "PK"): "pk", (EFI_GLOBAL, "KEK"): "kek"} | {
    (EFI_IMAGE_SECURITY_DATABASE, name): name for name in ("db", "dbx")
}
RUNTIME_POLICY_VERSION = 1
"""``meta.version`` of Keylime's runtime policy format (``keylime.ima.ima``, 7.x)."""


def tpm_policy(policy: Policy, releases: Sequence[Release]) -> dict[str, list[str]]:
    """Keylime's ``tpm_policy``: every ``[pcr.N]`` of the policy as allowed values (hex).

    ``releases = true`` becomes the values U-Boot's measurement of each
    recorded release gives, so the export is as current as the releases.
    """
    configurations = release_configurations(policy, releases)
    exported: dict[str, list[str]] = {}
    for index, values in sorted(policy.pcr.items()):
        if index in KEYLIME_RESERVED:
            raise ConfigError(
                f"pcr.{index}: {KEYLIME_RESERVED[index]}; Keylime refuses it in tpm_policy"
            )
        if values.releases:
            found = [value.hex() for _, value in release_pcr_values(policy, configurations, index)]
            if not found:
                raise ConfigError(
                    f"pcr.{index}: releases = true, and {policy.product} has no release"
                )
        else:
            found = [value.lower() for value in values.allowed]
        exported[str(index)] = list(dict.fromkeys(found))
    return exported


def runtime_policy(policy: Policy) -> dict[str, Any]:
    """Keylime's runtime (IMA) policy skeleton: keyfab records no file digests to fill it.

    Every field Keylime requires is present; ``digests``, ``excludes``,
    ``keyrings`` and ``ima-buf`` are left for the user (``keylime-policy
    create runtime`` fills them from a file system or an IMA log).
    """
    return {
        "meta": {"version": RUNTIME_POLICY_VERSION, "generator": 0},
        "release": 0,
        "digests": {},
        "excludes": [],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": None},
        "ima-buf": {},
        "verification-keys": "",
    }


def mb_refstate(policy: Policy, golden: EventLog) -> dict[str, Any]:
    """Keylime's ``example`` refstate, read from a golden boot that passes ``policy``."""
    _expressible(policy)
    if "sha256" not in golden.banks:
        raise ConfigError(
            "golden log: no sha256 bank; Keylime's example policy pins SHA-256 digests"
        )
    for event in golden.events:
        _example_accepts(event)
    reasons = evaluate(policy, pcrs=_quoted(policy, golden), log=golden, releases=())
    if reasons:
        raise ConfigError(f"golden log: fails the policy of {policy.product}: {reasons[0]}")
    secure = _secure_boot(golden)
    return {
        "has_secureboot": secure,
        "scrtm_and_bios": [
            {
                "scrtm": _one(
                    _digests(golden, 0, "EV_S_CRTM_VERSION"), "the S-CRTM version (PCR 0)"
                ),
                "platform_firmware": _digests(golden, 0, "EV_EFI_PLATFORM_FIRMWARE_BLOB")
                + _digests(golden, 0, "EV_EFI_PLATFORM_FIRMWARE_BLOB2"),
            }
        ],
        **_keys(golden),
        "vendor_db": [],
        "mokdig": [d for e, d in _ipl(golden, 14) if _text(e) == "MokList"],
        "mokxdig": [d for e, d in _ipl(golden, 14) if _text(e) == "MokListX"],
        "kernels": [_kernel(golden, secure)],
    }


def _expressible(policy: Policy) -> None:
    """Refuse what the ``example`` engine cannot check (U-Boot releases, allowed event types)."""
    if any(values.releases for values in policy.pcr.values()) or any(
        rule.kind == "fit-release" for rule in policy.rule
    ):
        raise ConfigError(
            "U-Boot FIT releases (releases = true, rule fit-release) cannot be expressed in"
            " Keylime's example measured-boot policy (UEFI shim/GRUB boots only)"
        )
    for rule in policy.rule:
        if isinstance(rule, NoEventType):
            for kind in rule.types:
                if not _refused_by_example(kind, rule.data):
                    raise ConfigError(
                        f"rule no-event-type {kind}: Keylime's example policy accepts such events"
                    )


def _refused_by_example(kind: str, data: str | None) -> bool:
    """True if ``example`` refuses every event of this type (whose data holds ``data``)."""
    if kind == "EV_EFI_ACTION" and data is not None:
        return not any(data in text for texts in EXAMPLE_ACTIONS.values() for text in texts)
    return kind not in EXAMPLE_EVENTS


def _example_accepts(event: Event) -> None:
    """The golden boot must be one ``example`` can accept: else Keylime refuses the fleet."""
    where = f"golden log: event {event.index} (PCR {event.pcr}): {event.type_name}"
    name = event.type_name
    if event.pcr not in EXAMPLE_EVENTS.get(name, ()) or (name == "EV_NO_ACTION" and event.index):
        raise ConfigError(f"{where} is not an event Keylime's example policy accepts")
    if name == "EV_EFI_ACTION" and _text(event) not in EXAMPLE_ACTIONS[event.pcr]:
        raise ConfigError(
            f"{where} {_text(event)!r} is not an action Keylime's example policy accepts"
        )
    if name == "EV_IPL" and not _IPL_TEXTS[event.pcr].fullmatch(_text(event)):
        raise ConfigError(
            f"{where} {_text(event)[:40]!r} is not a text Keylime's example policy knows"
        )


def _quoted(policy: Policy, golden: EventLog) -> dict[int, bytes]:
    """What a TPM that booted the golden log quotes: its replay, zeros where nothing extended."""
    values = replay(golden).get(policy.attestation.bank, {})
    size = len(next(iter(values.values()))) if values else 32
    return {i: values.get(i, bytes(size)) for i in policy.attestation.pcrs}


def _text(event: Event) -> str:
    """Event data as the text tpm2-tools shows Keylime (without its NUL terminator)."""
    return event.data.rstrip(b"\0").decode("utf-8", "replace")


def _hex(event: Event) -> dict[str, str]:
    return {"sha256": "0x" + event.digests["sha256"].hex()}


def _digests(golden: EventLog, pcr: int, kind: str) -> list[dict[str, str]]:
    return [_hex(e) for e in golden.events if e.pcr == pcr and e.type_name == kind]


def _one(found: list[dict[str, str]], what: str) -> dict[str, str]:
    if len(found) != 1:
        raise ConfigError(f"golden log: {len(found)} measurements of {what}, Keylime expects one")
    return found[0]


def _ipl(golden: EventLog, pcr: int) -> Iterator[tuple[Event, dict[str, str]]]:
    return ((e, _hex(e)) for e in golden.events if e.pcr == pcr and e.type_name == "EV_IPL")


def _secure_boot(golden: EventLog) -> bool:
    for event in golden.events:
        variable = uefi_variable(event)
        if (
            event.pcr == 7
            and variable
            and (variable.vendor, variable.name) == (EFI_GLOBAL, "SecureBoot")
        ):
            return variable.value == b"\x01"
    raise ConfigError("golden log: no SecureBoot variable measured in PCR 7")


def _keys(golden: EventLog) -> dict[str, list[dict[str, str]]]:
    """PK, KEK, db and dbx as the golden boot measured them (``example`` compares each list)."""
    keys: dict[str, list[dict[str, str]]] = {name: [] for name in _KEY_VARIABLES.values()}
    for event in golden.events:
        variable = uefi_variable(event)
        if event.pcr != 7 or event.type_name != "EV_EFI_VARIABLE_DRIVER_CONFIG" or variable is None:
            continue
        name = _KEY_VARIABLES.get((variable.vendor, variable.name))
        if name is not None:
            keys[name] = list(signatures(variable.value))
    return keys


def signatures(value: bytes) -> Iterator[dict[str, str]]:
    """Each EFI_SIGNATURE_DATA of an EFI_SIGNATURE_LIST sequence (UEFI 2.10 §32.4.1), bounded."""
    r = Reader(value, "signature list", little_endian=True)
    try:
        while r.remaining:
            r.take(16, "SignatureType")
            list_size, header_size, size = (
                r.u32(f) for f in ("ListSize", "HeaderSize", "SignatureSize")
            )
            body = list_size - 28 - header_size
            if size <= 16 or body < 0 or body % size:
                raise r.error("inconsistent signature list sizes")
            r.take(header_size, "SignatureHeader")
            for _ in range(body // size):
                owner = uuid.UUID(bytes_le=r.take(16, "SignatureOwner"))
                yield {
                    "SignatureOwner": str(owner),
                    "SignatureData": "0x" + r.take(size - 16, "SignatureData").hex(),
                }
    except VerificationError as error:
        raise ConfigError(f"golden log: {error}") from None


def _kernel(golden: EventLog, secure: bool) -> dict[str, str]:
    """shim, GRUB (and kernel, with Secure Boot) in PCR 4; initrd, vmlinuz in 9; cmdline in 8."""
    apps = [
        _hex(e)["sha256"]
        for e in golden.events
        if e.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
    ]
    expected = "shim, GRUB and the kernel" if secure else "shim and GRUB"
    if len(apps) != (3 if secure else 2) and not (secure and len(apps) == 4 and apps[2] == apps[3]):
        raise ConfigError(
            f"golden log: {len(apps)} boot applications in PCR 4, Keylime expects {expected}"
        )
    kernel = {"shim_authcode_sha256": apps[0], "grub_authcode_sha256": apps[1]}
    if secure:
        kernel["kernel_authcode_sha256"] = apps[2]
    files = list(_ipl(golden, 9))
    initrd = [d for e, d in files if re.search("/(initrd|initramfs)", _text(e))]
    kernel["initrd_plain_sha256"] = _one(initrd, "the initrd (PCR 9)")["sha256"]
    if not secure:
        vmlinuz = [d for e, d in files if "/vmlinuz" in _text(e)]
        kernel["vmlinuz_plain_sha256"] = _one(vmlinuz, "the kernel file (PCR 9)")["sha256"]
    lines = [_text(e).removeprefix("kernel_cmdline: ") for e, _ in _ipl(golden, 8)]
    lines = [line for line in lines if not line.startswith("grub_cmd: ")]
    if len(lines) != 1:
        raise ConfigError(
            f"golden log: {len(lines)} kernel command lines in PCR 8, Keylime expects one"
        )
    kernel["kernel_cmdline"] = re.escape(lines[0])
    return kernel
