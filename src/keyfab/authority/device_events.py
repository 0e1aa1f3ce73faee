"""Events a device reports about itself (tamper, a failed boot check): audit events.

The device agent posts them (``POST /api/v1/devices/{serial}/events``) as the
device: mutual TLS with its certificate or a device token bound to its serial;
operators and admins may record for any device. Each becomes one audit event
``device.<kind>`` on the device's serial, appended in one transaction, so the
hash-chained log holds what the device said and when the server heard it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from keyfab import audit
from keyfab.authority.roles import Principal, admit_for_device
from keyfab.authority.service import Authority
from keyfab.clock import utc_now
from keyfab.errors import InvalidRequestError, NotFoundError
from keyfab.registry import Device

KINDS = frozenset({"tamper", "boot.mismatch"})
MAX_DETAILS = 4096
_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class RecordedEvent:
    serial: str
    kind: str
    sequence: int
    received: str


def _checked(kind: str, details: dict[str, Any]) -> dict[str, Any]:
    if kind not in KINDS:
        raise InvalidRequestError(f"unknown event kind {kind[:32]!r} ({', '.join(sorted(KINDS))})")
    if not all(isinstance(key, str) and _KEY.match(key) for key in details):
        raise InvalidRequestError("event details: keys are short lower-case names")
    if len(json.dumps(details)) > MAX_DETAILS:
        raise InvalidRequestError(f"event details are larger than {MAX_DETAILS} bytes")
    return details


def record(
    authority: Authority, serial: str, principal: Principal, kind: str, details: dict[str, Any]
) -> RecordedEvent:
    """Append ``device.<kind>`` for ``serial``; refused for another device or an unknown kind."""
    admit_for_device(principal, serial, "record device events", "report events about itself only")
    checked = _checked(kind, details)
    received = utc_now().isoformat()
    with authority.transaction() as session:
        if session.scalar(select(Device.id).where(Device.serial == serial)) is None:
            raise NotFoundError(f"no device {serial}")
        data = {"reported": checked, "by": principal.name, "received": received}
        sequence = audit.append(session, f"device.{kind}", serial, data)
    return RecordedEvent(serial, kind, sequence, received)
