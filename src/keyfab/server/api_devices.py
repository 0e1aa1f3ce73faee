"""REST: devices (list, show, revoke) and their certificates (show, download)."""

from __future__ import annotations

from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab._time import utc_now
from keyfab.registry import Batch, Certificate, Device, DeviceState
from keyfab.server._views import certificate_info, certificate_summary, device_summary
from keyfab.server.auth import require, service
from keyfab.server.models import (
    CertificateInfo,
    DeviceInfo,
    DevicePage,
    RevokeRequest,
    RevokeResult,
)
from keyfab.server.problems import ProblemError
from keyfab.server.roles import READERS, WRITERS, Principal

router = APIRouter(prefix="/api/v1", tags=["devices"])
Reader = Annotated[Principal, Depends(require(*READERS))]
Writer = Annotated[Principal, Depends(require(*WRITERS))]
SERIAL = r"^[A-Za-z0-9._:-]{1,64}$"
CERT_SERIAL = r"^[0-9a-f]{1,42}$"


def _device(session: Session, serial: str) -> tuple[Device, str | None]:
    row = session.execute(
        select(Device, Batch.name)
        .outerjoin(Batch, Device.batch_id == Batch.id)
        .where(Device.serial == serial)
    ).one_or_none()
    if row is None:
        raise ProblemError(404, "device-not-found", f"no device with serial {serial!r}")
    return row[0], row[1]


def _certificates(session: Session, device_id: int) -> list[Certificate]:
    return list(
        session.scalars(
            select(Certificate).where(Certificate.device_id == device_id).order_by(Certificate.id)
        )
    )


@router.get("/devices", response_model=DevicePage)
def list_devices(
    request: Request,
    _: Reader,
    batch: Annotated[str | None, Query(max_length=128)] = None,
    state: DeviceState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
) -> DevicePage:
    """Devices, oldest first, filtered by batch and state, one page at a time."""
    query = select(Device, Batch.name).outerjoin(Batch, Device.batch_id == Batch.id)
    if batch is not None:
        query = query.where(Batch.name == batch)
    if state is not None:
        query = query.where(Device.state == state.value)
    with service(request).reading() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.execute(query.order_by(Device.id).limit(limit).offset(offset)).all()
        items = [device_summary(device, name) for device, name in rows]
    return DevicePage(items=items, total=total, limit=limit, offset=offset)


@router.get("/devices/{serial}", response_model=DeviceInfo)
def show_device(
    request: Request, _: Reader, serial: Annotated[str, Path(pattern=SERIAL)]
) -> DeviceInfo:
    """One device and all its certificates."""
    with service(request).reading() as session:
        device, batch = _device(session, serial)
        certificates = [certificate_summary(c) for c in _certificates(session, device.id)]
        return DeviceInfo(**device_summary(device, batch).model_dump(), certificates=certificates)


@router.post("/devices/{serial}/revoke", response_model=RevokeResult)
def revoke_device(
    request: Request,
    principal: Writer,
    serial: Annotated[str, Path(pattern=SERIAL)],
    body: RevokeRequest | None = None,
) -> RevokeResult:
    """Revoke every certificate of a device; the next CRL lists them."""
    reason = body.reason if body is not None else "unspecified"
    with service(request).transaction() as session:
        device, _batch = _device(session, serial)
        if device.state == DeviceState.REVOKED:
            raise ProblemError(409, "already-revoked", f"device {serial} is already revoked")
        now = utc_now()
        certificates = _certificates(session, device.id)
        for certificate in certificates:
            if certificate.revoked_at is None:
                certificate.revoked_at, certificate.revocation_reason = now, reason
        device.state = DeviceState.REVOKED
        numbers = [c.serial_number for c in certificates]
        audit.append(
            session,
            "device.revoked",
            serial,
            {"reason": reason, "certificates": numbers, "by": principal.name},
        )
    return RevokeResult(serial=serial, state=DeviceState.REVOKED, revoked_certificates=numbers)


def _certificate(session: Session, serial_number: str) -> tuple[Certificate, str | None]:
    row = session.execute(
        select(Certificate, Device.serial)
        .outerjoin(Device, Certificate.device_id == Device.id)
        .where(Certificate.serial_number == serial_number)
    ).one_or_none()
    if row is None:
        raise ProblemError(404, "certificate-not-found", f"no certificate {serial_number}")
    return row[0], row[1]


@router.get("/certificates/{serial_number}", response_model=CertificateInfo, tags=["certificates"])
def show_certificate(
    request: Request, _: Reader, serial_number: Annotated[str, Path(pattern=CERT_SERIAL)]
) -> CertificateInfo:
    """One certificate by its serial number (lower-case hex, as keyfab records it)."""
    with service(request).reading() as session:
        return certificate_info(*_certificate(session, serial_number))


@router.get(
    "/certificates/{serial_number}/{encoding}",
    tags=["certificates"],
    responses={
        200: {
            "content": {"application/pem-certificate-chain": {}, "application/pkix-cert": {}},
            "description": "The certificate, PEM or DER.",
        }
    },
)
def download_certificate(
    request: Request,
    _: Reader,
    serial_number: Annotated[str, Path(pattern=CERT_SERIAL)],
    encoding: Annotated[str, Path(pattern=r"^(pem|der)$")],
) -> Response:
    """The certificate itself: ``pem`` or ``der``."""
    with service(request).reading() as session:
        certificate, _device_serial = _certificate(session, serial_number)
    if encoding == "der":
        return Response(certificate.der, media_type="application/pkix-cert")
    pem = x509.load_der_x509_certificate(certificate.der).public_bytes(Encoding.PEM)
    return Response(pem, media_type="application/pem-certificate-chain")
