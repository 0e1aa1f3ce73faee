"""REST: remote attestation (challenge, evidence, history) for one device.

A device asks for a challenge and posts its evidence for its own serial only
(mutual TLS with its certificate, or a device token); operators and admins may
act for any device; readers see the history. The checks, records and actions
are ``keyfab.attest.service``'s; refusals are problem documents.
"""

from __future__ import annotations

import base64
import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel

from keyfab.attest import service as attestation
from keyfab.attest.evidence import FORMAT, from_document
from keyfab.authority import READERS, WRITERS, Principal, Role
from keyfab.registry import queries
from keyfab.server.api_devices import SERIAL
from keyfab.server.auth import require, service

router = APIRouter(prefix="/api/v1/devices/{serial}/attestation", tags=["attestation"])
Attester = Annotated[Principal, Depends(require(Role.DEVICE, *WRITERS))]
Reader = Annotated[Principal, Depends(require(*READERS))]
Serial = Annotated[str, Path(pattern=SERIAL)]


class ChallengeInfo(BaseModel):
    serial: str
    nonce: str  # base64
    expires: datetime.datetime
    bank: str
    pcrs: list[int]
    format: str = FORMAT


class ResultInfo(BaseModel):
    serial: str
    at: datetime.datetime
    verdict: str
    reasons: list[str]
    notes: list[str]
    pcrs: dict[str, dict[str, str]]
    reset_count: int | None
    restart_count: int | None
    clock: int | None
    firmware_version: int | None


class History(BaseModel):
    serial: str
    state: str
    attested_at: datetime.datetime | None
    results: list[ResultInfo]


@router.post("/challenge", response_model=ChallengeInfo)
def challenge(request: Request, principal: Attester, serial: Serial) -> ChallengeInfo:
    """A one-time nonce for this device and the PCRs its quote must cover."""
    made = attestation.challenge(service(request).authority, serial, principal)
    return ChallengeInfo(
        serial=serial,
        nonce=base64.b64encode(made.nonce).decode(),
        expires=made.expires,
        bank=made.selection.bank,
        pcrs=list(made.selection.pcrs),
    )


@router.post("", response_model=ResultInfo)
def verify(
    request: Request,
    principal: Attester,
    serial: Serial,
    evidence: Annotated[dict[str, Any], Body(description=f"a {FORMAT} document")],
) -> ResultInfo:
    """Verify the device's evidence; the answer is the recorded result (trusted or failed)."""
    result = attestation.verify(
        service(request).authority, serial, principal, from_document(evidence)
    )
    return ResultInfo.model_validate(result.to_json())


@router.get("", response_model=History)
def history(
    request: Request,
    _: Reader,
    serial: Serial,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> History:
    """The device's attestation state and its newest results, newest first."""
    found = queries.attestation_history(service(request).registry, serial, limit)
    results = [attestation.Result.from_row(serial, row).to_json() for row in found.results]
    return History(
        serial=serial,
        state=found.device.attestation,
        attested_at=found.device.attested_at,
        results=[ResultInfo.model_validate(r) for r in results],
    )
