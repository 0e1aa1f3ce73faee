"""TCG event log types (placeholder: only the shared dataclasses, no parser).

The parser (``parse_eventlog``) and ``replay`` land from the event log work;
this file carries the agreed types so the attestation policy can be written
and tested against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_NAMES = {
    0x00000001: "EV_POST_CODE",
    0x00000003: "EV_NO_ACTION",
    0x00000004: "EV_SEPARATOR",
    0x00000005: "EV_ACTION",
    0x00000006: "EV_EVENT_TAG",
    0x00000007: "EV_S_CRTM_CONTENTS",
    0x00000008: "EV_S_CRTM_VERSION",
    0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
    0x0000000B: "EV_TABLE_OF_DEVICES",
    0x0000000C: "EV_COMPACT_HASH",
    0x0000000D: "EV_IPL",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000007: "EV_EFI_ACTION",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
}


@dataclass(frozen=True)
class Event:
    index: int
    pcr: int
    event_type: int
    digests: Mapping[str, bytes]
    data: bytes

    @property
    def type_name(self) -> str:
        return _NAMES.get(self.event_type, f"0x{self.event_type:08x}")


@dataclass(frozen=True)
class EventLog:
    events: Sequence[Event]
    banks: Sequence[str]
    crypto_agile: bool
