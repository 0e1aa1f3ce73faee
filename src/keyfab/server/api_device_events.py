"""REST: events a device reports about itself (tamper, boot check), recorded as audit events.

The device agent posts as its device (mutual TLS or a device token); the
checks and the record are ``keyfab.authority.device_events``'s.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from keyfab.authority import WRITERS, Principal, Role, device_events
from keyfab.server.api_devices import SERIAL
from keyfab.server.auth import require, service

router = APIRouter(prefix="/api/v1/devices/{serial}/events", tags=["devices"])
Reporter = Annotated[Principal, Depends(require(Role.DEVICE, *WRITERS))]
Serial = Annotated[str, Path(pattern=SERIAL)]


class DeviceEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(max_length=32, description="tamper or boot.mismatch")
    details: dict[str, Any] = Field(default_factory=dict)


class RecordedEvent(BaseModel):
    serial: str
    kind: str
    sequence: int
    received: str


@router.post("", response_model=RecordedEvent, status_code=201)
def report(
    request: Request, principal: Reporter, serial: Serial, event: DeviceEvent
) -> RecordedEvent:
    """Record the event in the audit log (``device.<kind>``); its sequence number."""
    done = device_events.record(
        service(request).authority, serial, principal, event.kind, event.details
    )
    return RecordedEvent(
        serial=done.serial, kind=done.kind, sequence=done.sequence, received=done.received
    )
