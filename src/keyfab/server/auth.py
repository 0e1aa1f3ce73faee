"""Authentication (who is calling) and the role check (may they).

A caller proves itself with one of:
* ``Authorization: Bearer kf_...``: an API token;
* ``Authorization: Basic`` with the token's name as user and the token as
  password: what EST clients (curl ``-u``) send for bootstrap enrolment;
* a client certificate in the TLS handshake, verified there against keyfab's
  chain and here against the registry: a recorded, unrevoked device
  certificate makes the caller that device; a station certificate makes it
  that station, with operator rights.
Routing decides which roles an endpoint admits (``require``); this module
only establishes identities.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable

from cryptography import x509
from fastapi import Request
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from keyfab.registry import Certificate, Device, DeviceState
from keyfab.server._peer import peer_certificate
from keyfab.server._service import Service
from keyfab.server.problems import ProblemError
from keyfab.server.roles import Principal, Role
from keyfab.server.tokens import TokenRefusedError, authenticate

_DEVICE_PROFILES = frozenset({"idevid", "est-device"})
_CHALLENGE = {"WWW-Authenticate": 'Bearer, Basic realm="keyfab"'}


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, "unauthorized", detail, headers=_CHALLENGE)


def service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


def _from_header(connection: Connection, header: str) -> Principal:
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    try:
        if scheme == "bearer":
            return authenticate(connection, credentials.strip())
        if scheme == "basic":
            return _basic(connection, credentials.strip())
    except TokenRefusedError as refused:
        raise unauthorized(str(refused)) from None
    raise unauthorized("unsupported authorization scheme: use Bearer or Basic")


def _basic(connection: Connection, credentials: str) -> Principal:
    if len(credentials) > 512:
        raise TokenRefusedError("malformed Basic credentials")
    try:
        user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise TokenRefusedError("malformed Basic credentials") from None
    if not sep:
        raise TokenRefusedError("malformed Basic credentials")
    principal = authenticate(connection, password)
    if not hmac.compare_digest(user.encode(), principal.name.encode()):
        raise TokenRefusedError("unknown token")
    return principal


def _from_certificate(session: Session, der: bytes) -> Principal:
    """The device or station whose recorded, unrevoked certificate the TLS peer presented."""
    serial_number = format(x509.load_der_x509_certificate(der).serial_number, "x")
    row = session.execute(
        select(Certificate, Device)
        .outerjoin(Device, Certificate.device_id == Device.id)
        .where(Certificate.serial_number == serial_number)
    ).one_or_none()
    if row is None or not hmac.compare_digest(row[0].der, der):
        raise unauthorized("client certificate is not one keyfab issued")
    certificate, device = row
    if certificate.profile == "station":
        return _station(certificate)
    if certificate.profile not in _DEVICE_PROFILES or device is None:
        raise unauthorized("client certificate is not a device or station certificate")
    if certificate.revoked_at is not None or device.state == DeviceState.REVOKED:
        raise ProblemError(403, "device-revoked", f"device {device.serial} is revoked")
    return Principal(
        device.serial,
        Role.DEVICE,
        device_serial=device.serial,
        certificate_serial=certificate.serial_number,
    )


def _station(certificate: Certificate) -> Principal:
    name = certificate.key_label.split(":")[1]
    if certificate.revoked_at is not None:
        raise ProblemError(403, "station-revoked", f"station {name} is revoked")
    return Principal(name, Role.OPERATOR, certificate_serial=certificate.serial_number)


def identify(request: Request) -> Principal | None:
    """The caller's identity, None if it offered none, or a 401/403 problem."""
    header = request.headers.get("authorization")
    peer = peer_certificate(request.scope)
    if header is None and peer is None:
        return None
    registry = service(request).registry
    if header is not None:
        with registry.lookup() as connection:
            return _from_header(connection, header)
    assert peer is not None
    with registry.reading() as session:
        return _from_certificate(session, peer)


def require(*roles: Role) -> Callable[[Request], Principal]:
    """A FastAPI dependency admitting only ``roles``: 401 if anonymous, 403 if wrong role."""
    allowed = frozenset(roles)

    def dependency(request: Request) -> Principal:
        principal = identify(request)
        if principal is None:
            raise unauthorized("authentication required")
        if principal.role not in allowed:
            raise ProblemError(
                403, "forbidden", f"role {principal.role} may not {request.method} this resource"
            )
        return principal

    return dependency
