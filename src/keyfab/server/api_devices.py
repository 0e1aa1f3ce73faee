"""REST: devices (list, show, revoke) and their certificates (show, download)."""

from __future__ import annotations

from typing import Annotated

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from keyfab.authority import READERS, WRITERS, Principal, revoke_certificate, revoke_device
from keyfab.clock import parse_duration
from keyfab.errors import InvalidRequestError
from keyfab.pki import RevocationReason
from keyfab.registry import DeviceState, queries
from keyfab.server._views import certificate_info, certificate_summary, device_summary
from keyfab.server.auth import require, service
from keyfab.server.models import (
    CertificateInfo,
    DeviceInfo,
    DevicePage,
    RevokeRequest,
    RevokeResult,
)

router = APIRouter(prefix="/api/v1", tags=["devices"])
Reader = Annotated[Principal, Depends(require(*READERS))]
Writer = Annotated[Principal, Depends(require(*WRITERS))]
SERIAL = r"^[A-Za-z0-9._:-]{1,64}$"
CERT_SERIAL = r"^[0-9a-f]{1,42}$"
DURATION = r"^[1-9][0-9]{0,5}[smhd]$"
CURSOR = r"^[A-Za-z0-9_-]{1,64}$"  # registry.cursors decides the rest


@router.get("/devices", response_model=DevicePage)
def list_devices(
    request: Request,
    _: Reader,
    batch: Annotated[str | None, Query(max_length=128)] = None,
    state: DeviceState | None = None,
    product: Annotated[str | None, Query(max_length=128)] = None,
    cursor: Annotated[
        str | None, Query(pattern=CURSOR, description="next_cursor of a page")
    ] = None,
    after: Annotated[
        str | None, Query(pattern=SERIAL, description="start after this serial")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DevicePage:
    """Devices, oldest first, filtered by batch, state and product, a keyset page at a time:
    pass ``next_cursor`` back as ``cursor`` for the next page (null at the end)."""
    if "offset" in request.query_params:
        raise InvalidRequestError(
            "offset was removed: pass next_cursor from the previous page as cursor",
            slug="offset-removed",
        )
    page = queries.device_listing(
        service(request).registry,
        batch=batch,
        state=state.value if state else None,
        product=product,
        cursor=cursor,
        after_serial=after,
        limit=limit,
    )
    items = [device_summary(row.device, row.batch) for row in page.items]
    return DevicePage(items=items, next_cursor=page.next_cursor, limit=limit)


@router.get("/devices/{serial}", response_model=DeviceInfo)
def show_device(
    request: Request, _: Reader, serial: Annotated[str, Path(pattern=SERIAL)]
) -> DeviceInfo:
    """One device and all its certificates."""
    found = queries.device(service(request).registry, serial)
    certificates = [certificate_summary(c) for c in found.certificates]
    return DeviceInfo(
        **device_summary(found.device, found.batch).model_dump(), certificates=certificates
    )


def _reason(body: RevokeRequest | None) -> RevocationReason:
    return RevocationReason.parse(body.reason) if body is not None else RevocationReason.UNSPECIFIED


@router.post("/devices/{serial}/revoke", response_model=RevokeResult)
def revoke(
    request: Request,
    principal: Writer,
    serial: Annotated[str, Path(pattern=SERIAL)],
    body: RevokeRequest | None = None,
) -> RevokeResult:
    """Revoke every certificate of a device; the next CRL lists them with the reason.

    Revoking a revoked device changes nothing: ``changed`` is false.
    """
    done = revoke_device(service(request).authority, serial, _reason(body), by=principal.name)
    return RevokeResult(
        serial=serial,
        state=DeviceState.REVOKED,
        reason=done.reason.value,
        changed=done.changed,
        revoked_certificates=list(done.revoked),
    )


@router.post(
    "/certificates/{serial_number}/revoke",
    response_model=RevokeResult,
    tags=["certificates"],
)
def revoke_one(
    request: Request,
    principal: Writer,
    serial_number: Annotated[str, Path(pattern=CERT_SERIAL)],
    body: RevokeRequest | None = None,
) -> RevokeResult:
    """Revoke one certificate (a device's, a station's, a signer's) by its serial number."""
    svc = service(request)
    done = revoke_certificate(svc.authority, serial_number, _reason(body), by=principal.name)
    return RevokeResult(
        serial=queries.certificate(svc.registry, serial_number).device_serial,
        state=None,
        reason=done.reason.value,
        changed=done.changed,
        revoked_certificates=list(done.revoked),
    )


@router.get("/certificates/expiring", response_model=list[CertificateInfo], tags=["certificates"])
def expiring_certificates(
    request: Request,
    _: Reader,
    within: Annotated[str, Query(pattern=DURATION, description="e.g. 30d, 12h")] = "30d",
    include_renewed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CertificateInfo]:
    """Unrevoked certificates expiring within the window, soonest first; those a device has
    already renewed only with ``include_renewed``."""
    found = queries.expiring(
        service(request).registry,
        parse_duration(within, "within"),
        include_renewed=include_renewed,
        limit=limit,
    )
    return [certificate_info(r.certificate, r.device_serial) for r in found]


@router.get("/certificates/{serial_number}", response_model=CertificateInfo, tags=["certificates"])
def show_certificate(
    request: Request, _: Reader, serial_number: Annotated[str, Path(pattern=CERT_SERIAL)]
) -> CertificateInfo:
    """One certificate by its serial number (lower-case hex, as keyfab records it)."""
    found = queries.certificate(service(request).registry, serial_number)
    return certificate_info(found.certificate, found.device_serial)


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
    der = queries.certificate(service(request).registry, serial_number).certificate.der
    if encoding == "der":
        return Response(der, media_type="application/pkix-cert")
    pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)
    return Response(pem, media_type="application/pem-certificate-chain")
