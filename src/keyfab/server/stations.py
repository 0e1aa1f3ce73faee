"""Station identities: TLS client certificates that give a factory station operator rights.

A station proves itself in the TLS handshake instead of holding a bearer token:
its key is made here and handed over once (a file, 0600), and the certificate
is recorded like every other one, so revoking it in the registry locks the
station out at its next request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert, select, update

from keyfab import audit, pki
from keyfab._time import utc_now
from keyfab.errors import ConfigError
from keyfab.registry import Certificate, certificate_row
from keyfab.workspace import Workspace

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


@dataclass(frozen=True)
class StationIdentity:
    certificate: x509.Certificate
    key_pem: bytes  # the only copy: write it 0600 and hand it to the station


def _label(name: str) -> str:
    return f"station:{name}"


def issue(workspace: Workspace, name: str) -> StationIdentity:
    """A new station certificate and key, recorded with its audit event."""
    if not _NAME.fullmatch(name):
        raise ConfigError("station name must be 1-48 letters, digits, '.', '_' or '-'")
    ca = workspace.authority()
    organization = ca.certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    key = ec.generate_private_key(ec.SECP256R1())
    template = pki.station(str(organization[0].value) if organization else "", name)
    certificate = ca.issue(template, key.public_key())
    number = format(certificate.serial_number, "x")
    registry = workspace.registry()
    try:
        with registry.transaction() as session:
            row = certificate_row(
                certificate,
                device_id=None,
                key_label=f"{_label(name)}:{number[:16]}",
                profile="station",
                issued_at=utc_now(),
            )
            session.execute(insert(Certificate).values(**row))
            audit.append(session, "station.certified", name, {"serial_number": number})
    finally:
        registry.dispose()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return StationIdentity(certificate, key_pem)


def revoke(workspace: Workspace, name: str) -> int:
    """Revoke every certificate of a station; returns how many."""
    registry = workspace.registry()
    try:
        with registry.transaction() as session:
            numbers = session.scalars(
                select(Certificate.serial_number).where(
                    Certificate.profile == "station",
                    Certificate.key_label.startswith(f"{_label(name)}:", autoescape=True),
                    Certificate.revoked_at.is_(None),
                )
            ).all()
            if not numbers:
                raise ConfigError(f"no unrevoked certificate for station {name!r}")
            session.execute(
                update(Certificate)
                .where(Certificate.serial_number.in_(numbers))
                .values(revoked_at=utc_now(), revocation_reason="cessationOfOperation")
            )
            audit.append(session, "station.revoked", name, {"certificates": list(numbers)})
            return len(numbers)
    finally:
        registry.dispose()
