"""What an event's data says: UEFI variables, text, the header (for people and policies).

The event data is not covered by the PCRs for most event types (the digest is
of the image, not of its description), so nothing here is evidence by itself;
it names events in listings and lets a policy find the event it means
("the SecureBoot variable"). Decoding never fails: data that does not decode
is described by its size.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from keyfab.attest._tpm2_wire import Reader
from keyfab.attest.eventlog import (
    EV_NO_ACTION,
    SPEC_ID_SIGNATURE,
    STARTUP_LOCALITY_SIGNATURE,
    Event,
)
from keyfab.errors import VerificationError

_VARIABLE_EVENTS = frozenset({0x80000001, 0x80000002, 0x8000000C, 0x800000E0})
_TEXT_EVENTS = frozenset({0x1, 0x5, 0x8, 0xD, 0x12, 0x80000007})
_SHOWN = 60  # characters of a description


@dataclass(frozen=True)
class UefiVariable:
    """``UEFI_VARIABLE_DATA``: a variable measured by name, vendor GUID and value."""

    vendor: uuid.UUID
    name: str
    value: bytes


def uefi_variable(event: Event) -> UefiVariable | None:
    """The variable an EV_EFI_VARIABLE_* event measured, or None if it is not one."""
    if event.event_type not in _VARIABLE_EVENTS:
        return None
    r = Reader(event.data, "UEFI variable", little_endian=True)
    try:
        vendor = uuid.UUID(bytes_le=r.take(16, "VariableName"))
        name_length, value_length = r.u64("UnicodeNameLength"), r.u64("VariableDataLength")
        name = r.take(2 * name_length, "UnicodeName").decode("utf-16-le")
        value = r.take(value_length, "VariableData")
    except (VerificationError, UnicodeDecodeError):
        return None
    return UefiVariable(vendor, name, value)


def describe(event: Event) -> str:
    """A short line about the event's data: a variable's name, a text, or a size."""
    variable = uefi_variable(event)
    if variable is not None:
        text = variable.name
    elif event.event_type == EV_NO_ACTION:
        text = _no_action(event.data)
    elif event.event_type in _TEXT_EVENTS:
        text = _text(event.data) or f"{len(event.data)} bytes"
    elif len(event.data) <= 8:
        text = event.data.hex()
    else:
        text = f"{len(event.data)} bytes"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _no_action(data: bytes) -> str:
    if data.startswith(SPEC_ID_SIGNATURE):
        return "Spec ID Event03"
    if len(data) == 17 and data.startswith(STARTUP_LOCALITY_SIGNATURE):
        return f"StartupLocality {data[16]}"
    return _text(data.split(b"\x00", 1)[0]) or f"{len(data)} bytes"


def _text(data: bytes) -> str | None:
    """Printable ASCII or UTF-16LE (firmware writes both) on one line, without NULs at the end."""
    for encoding in ("ascii", "utf-16-le"):
        try:
            text = " ".join(data.decode(encoding).rstrip("\x00").split())
        except UnicodeDecodeError:
            continue
        if text and text.isprintable():
            return text
    return None
