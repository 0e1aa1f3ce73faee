"""Who is calling: the principal behind a presented token or client certificate.

The service parses headers and TLS; deciding what a credential is worth is the
authority's, next to the tokens and certificates it grants. A device is its
recorded, unrevoked device certificate; a station is its recorded, unrevoked
station certificate (operator rights).
"""

from __future__ import annotations

import hmac

from cryptography import x509

from keyfab.authority.revocation import STATION_LABEL
from keyfab.authority.roles import Principal, Role
from keyfab.authority.tokens import authenticate
from keyfab.errors import AuthenticationError, PermissionDeniedError
from keyfab.pki import DEVICE_PROFILES, Profile, serial_hex
from keyfab.registry import Certificate, DeviceState, Registry, queries


def from_token(registry: Registry, presented: str) -> Principal:
    """The principal a bearer token stands for (one primary-key lookup, no transaction)."""
    with registry.lookup() as connection:
        return authenticate(connection, presented)


def from_certificate(registry: Registry, der: bytes) -> Principal:
    """The device or station whose recorded, unrevoked certificate the TLS peer presented.

    The TLS layer already checked the chain; this checks the registry has exactly
    this certificate (byte for byte) and that it still counts.
    """
    holder = queries.find_certificate(registry, serial_hex(x509.load_der_x509_certificate(der)))
    if holder is None or not hmac.compare_digest(holder.certificate.der, der):
        raise AuthenticationError("client certificate is not one keyfab issued")
    certificate, device = holder.certificate, holder.device
    if certificate.profile == Profile.STATION:
        return _station(certificate)
    if certificate.profile not in DEVICE_PROFILES or device is None:
        raise AuthenticationError("client certificate is not a device or station certificate")
    if certificate.revoked_at is not None or device.state == DeviceState.REVOKED:
        raise PermissionDeniedError(f"device {device.serial} is revoked", slug="device-revoked")
    return Principal(
        device.serial,
        Role.DEVICE,
        device_serial=device.serial,
        certificate_serial=certificate.serial_number,
        certificate_profile=certificate.profile,
    )


def _station(certificate: Certificate) -> Principal:
    name = certificate.key_label.removeprefix(STATION_LABEL).rpartition(":")[0]
    if certificate.revoked_at is not None:
        raise PermissionDeniedError(f"station {name} is revoked", slug="station-revoked")
    return Principal(name, Role.OPERATOR, certificate_serial=certificate.serial_number)
