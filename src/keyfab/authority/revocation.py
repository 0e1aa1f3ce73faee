"""Revocation: of a device, of one certificate, of a station. The only writer of it.

Each revokes the certificates still valid, records the RFC 5280 reason (which
the next CRL carries) and who asked, and appends one audit event, all in one
transaction. Revoking what is already revoked changes nothing and says so
(``Revocation.changed`` is False): the first revocation's time and reason stand.
A revocation that changed something ends with a signed checkpoint, witnessed
outside the database once it commits, so deleting it later is caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.authority.service import Authority
from keyfab.clock import utc_now
from keyfab.errors import NotFoundError
from keyfab.pki import Profile, RevocationReason
from keyfab.registry import Certificate, Device, DeviceState

STATION_LABEL = "station:"
"""Station certificates are recorded with key label ``station:<name>:<serial prefix>``."""


@dataclass(frozen=True)
class Revocation:
    """What a revocation did: the certificates it revoked now (none if already revoked)."""

    subject: str
    reason: RevocationReason
    revoked: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.revoked)


def _revoke(
    session: Session, certificates: Sequence[Certificate], reason: RevocationReason
) -> tuple[str, ...]:
    """Mark the still-valid ``certificates`` revoked now; their serial numbers."""
    now, numbers = utc_now(), []
    for certificate in certificates:
        if certificate.revoked_at is None:
            certificate.revoked_at, certificate.revocation_reason = now, reason.value
            numbers.append(certificate.serial_number)
    return tuple(numbers)


def _event(session: Session, kind: str, subject: str, revocation: Revocation, by: str) -> None:
    details = {"reason": revocation.reason.value, "certificates": list(revocation.revoked)}
    audit.append(session, kind, subject, {**details, "by": by})


def revoke_device(
    authority: Authority, serial: str, reason: RevocationReason, *, by: str
) -> Revocation:
    """Revoke every certificate of a device and mark it revoked."""
    with authority.transaction() as session:
        device = session.scalars(
            select(Device).where(Device.serial == serial).with_for_update()
        ).one_or_none()
        if device is None:
            raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
        certificates = session.scalars(
            select(Certificate).where(Certificate.device_id == device.id).order_by(Certificate.id)
        ).all()
        revocation = Revocation(serial, reason, _revoke(session, certificates, reason))
        if device.state == DeviceState.REVOKED and not revocation.changed:
            return revocation
        device.state = DeviceState.REVOKED
        _event(session, "device.revoked", serial, revocation, by)
        authority.checkpoint(session)
        return revocation


def revoke_operational(
    authority: Authority, serial: str, reason: RevocationReason, *, by: str
) -> Revocation:
    """Revoke a device's operational (LDevID) certificates only; its birth identity stays.

    What a failed attestation may do: the device loses its operational access
    but keeps the IDevID and IAK it can prove itself with once it is repaired.
    """
    with authority.transaction() as session:
        device = session.scalars(select(Device).where(Device.serial == serial)).one_or_none()
        if device is None:
            raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
        certificates = session.scalars(
            select(Certificate)
            .where(Certificate.device_id == device.id, Certificate.profile == Profile.LDEVID)
            .order_by(Certificate.id)
        ).all()
        revocation = Revocation(serial, reason, _revoke(session, certificates, reason))
        if revocation.changed:
            _event(session, "device.operational-revoked", serial, revocation, by)
            authority.checkpoint(session)
        return revocation


def revoke_certificate(
    authority: Authority, serial_number: str, reason: RevocationReason, *, by: str
) -> Revocation:
    """Revoke one certificate by its serial number (lowercase hex), whoever it belongs to."""
    with authority.transaction() as session:
        certificate = session.scalars(
            select(Certificate).where(Certificate.serial_number == serial_number)
        ).one_or_none()
        if certificate is None:
            raise NotFoundError(f"no certificate {serial_number}", slug="certificate-not-found")
        revocation = Revocation(serial_number, reason, _revoke(session, [certificate], reason))
        if revocation.changed:
            _event(session, "certificate.revoked", serial_number, revocation, by)
            authority.checkpoint(session)
        return revocation


def station_label(name: str) -> str:
    """The key-label prefix of a station's certificates."""
    return f"{STATION_LABEL}{name}:"


def revoke_station(
    authority: Authority,
    name: str,
    reason: RevocationReason = RevocationReason.CESSATION_OF_OPERATION,
    *,
    by: str,
) -> Revocation:
    """Revoke every certificate of a station: its next request is refused."""
    with authority.transaction() as session:
        certificates = session.scalars(
            select(Certificate).where(
                Certificate.profile == Profile.STATION,
                Certificate.key_label.startswith(station_label(name), autoescape=True),
            )
        ).all()
        if not certificates:
            raise NotFoundError(f"no station named {name!r}", slug="station-not-found")
        revocation = Revocation(name, reason, _revoke(session, certificates, reason))
        if revocation.changed:
            _event(session, "station.revoked", name, revocation, by)
            authority.checkpoint(session)
        return revocation


__all__ = [
    "Revocation",
    "revoke_certificate",
    "revoke_device",
    "revoke_operational",
    "revoke_station",
]
