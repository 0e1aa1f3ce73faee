"""The import flow: verified manifest entries become pre-provisioned devices.

One transaction per file. A manifest is one signed delivery (a reel of parts);
the registry either holds all of its good entries or none of them, so a file
that turns out to be truncated or not a JSON array halfway through imports
nothing, and re-running the import after any failure is always safe. Entries
that fail verification, conflict with the registry or repeat a uniqueId are
reported and skipped; the good ones around them are kept.

The price is one long write transaction (SQLite writers wait for it). Entries
are written in chunks with Core inserts, never held as ORM objects, so memory
stays flat for a 100,000-entry file.

Re-import is idempotent: a device already registered with the same uniqueId and
the same public key is counted as present and left alone; the same uniqueId
with a different key is a conflict and is reported, never overwritten.
"""

from __future__ import annotations

import datetime
import enum
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.clock import utc_now
from keyfab.manifest._b64 import b64_encode, b64url_encode
from keyfab.manifest._model import SecureElement
from keyfab.manifest._policy import VerificationPolicy, VerifiedEntry
from keyfab.manifest._serialize import format_timestamp
from keyfab.manifest._verify import EntryReport, verify_manifest
from keyfab.pki import serial_hex
from keyfab.registry import Certificate, Device, DeviceState, Registry, certificate_row

CHUNK = 500
SERIAL_PREFIX = "se-"
"""Pre-provisioned devices get serial ``se-<uniqueId>``: no keyfab serial was issued."""

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class Outcome(enum.StrEnum):
    IMPORTED = "imported"
    PRESENT = "already-present"
    REJECTED = "rejected"


@dataclass
class ImportSummary:
    """Counts of what happened to the file's entries."""

    imported: int = 0
    present: int = 0
    rejected: int = 0
    rejected_names: list[str] = field(default_factory=list)

    def count(self, outcome: Outcome, report: EntryReport, limit: int = 1000) -> None:
        if outcome is Outcome.IMPORTED:
            self.imported += 1
        elif outcome is Outcome.PRESENT:
            self.present += 1
        else:
            self.rejected += 1
            if len(self.rejected_names) < limit:
                self.rejected_names.append(report.name)


Listener = Callable[[EntryReport, Outcome, str | None], None]


def import_manifest(
    registry: Registry,
    stream: BinaryIO,
    policy: VerificationPolicy,
    source: str,
    listener: Listener | None = None,
) -> ImportSummary:
    """Verify and import every entry of ``stream``; ManifestError rolls all back."""
    summary = ImportSummary()

    def tell(report: EntryReport, outcome: Outcome, reason: str | None) -> None:
        summary.count(outcome, report)
        if listener is not None:
            listener(report, outcome, reason)

    with registry.transaction() as session:
        pending: list[EntryReport] = []
        for report in verify_manifest(stream, policy):
            pending.append(report)
            if len(pending) >= CHUNK:
                _write_chunk(session, pending, tell)
                pending = []
        _write_chunk(session, pending, tell)
        audit.append(
            session,
            "manifest.imported",
            source,
            {
                "imported": summary.imported,
                "present": summary.present,
                "rejected": summary.rejected,
            },
        )
    return summary


@dataclass(frozen=True)
class _Prepared:
    """What the import needs of one verified entry, each certificate parsed once."""

    verified: VerifiedEntry
    unique_id: str
    spki: bytes | None
    certificates: tuple[tuple[str, x509.Certificate, str], ...]  # (kid, certificate, serial hex)


def _prepare(verified: VerifiedEntry) -> _Prepared:
    element = verified.entry.element
    certificates = []
    for key in element.keys:
        if key.x5c:
            cert = x509.load_der_x509_certificate(key.x5c[0])
            certificates.append((key.kid, cert, serial_hex(cert)))
    identity = element.identity_key() or next(iter(element.keys), None)
    spki = None if identity is None else identity.public_key().public_bytes(*_SPKI)
    return _Prepared(verified, element.unique_id, spki, tuple(certificates))


def _write_chunk(session: Session, reports: list[EntryReport], tell: Listener) -> None:
    """Classify and insert a chunk; outcomes are told in file order.

    Two lookups per chunk (known unique ids, taken certificate serials), then
    one multi-row insert per table (Core, no ORM objects) and one audit append.
    """
    if not reports:
        return
    prepared = {id(r): _prepare(r.verified) for r in reports if r.verified is not None}
    connection = session.connection()
    known = select(Device.unique_id, Device.public_key).where(
        Device.unique_id.in_([p.unique_id for p in prepared.values()])
    )
    existing: dict[str | None, bytes | None] = {uid: key for uid, key in connection.execute(known)}
    serials = [serial for p in prepared.values() for _, _, serial in p.certificates]
    taken = set(
        connection.execute(
            select(Certificate.serial_number).where(Certificate.serial_number.in_(serials))
        ).scalars()
    )
    fresh: list[_Prepared] = []
    for report in reports:
        entry = prepared.get(id(report))
        if entry is None:
            tell(report, Outcome.REJECTED, report.error)
            continue
        outcome, reason = _classify(entry, existing, taken)
        if outcome is Outcome.IMPORTED:
            fresh.append(entry)
            taken.update(serial for _, _, serial in entry.certificates)
        tell(report, outcome, reason)
    _insert(session, fresh)


def _classify(
    entry: _Prepared, existing: dict[str | None, bytes | None], taken: set[str]
) -> tuple[Outcome, str | None]:
    if entry.unique_id in existing:
        known, ours = existing[entry.unique_id] or b"", entry.spki or b""
        if hmac.compare_digest(known, ours):
            return Outcome.PRESENT, None
        return Outcome.REJECTED, "uniqueId already in the registry with a different key"
    for _, _, serial in entry.certificates:
        if serial in taken:
            return Outcome.REJECTED, "a certificate with this serial number is already registered"
    return Outcome.IMPORTED, None


_DEVICES = Device.metadata.tables["devices"]
_CERTIFICATES = Certificate.metadata.tables["certificates"]


def _insert(session: Session, entries: list[_Prepared]) -> None:
    if not entries:
        return
    now = utc_now()
    connection = session.connection()
    connection.execute(insert(_DEVICES), [_device_row(p, now) for p in entries])
    inserted = select(Device.unique_id, Device.id).where(
        Device.unique_id.in_([p.unique_id for p in entries])
    )
    ids = {uid: device_id for uid, device_id in connection.execute(inserted)}
    rows = [
        _certificate_row(ids[p.unique_id], kid, cert)
        for p in entries
        for kid, cert, _ in p.certificates
    ]
    if rows:
        connection.execute(insert(_CERTIFICATES), rows)
    audit.append_many(
        session,
        [
            audit.Entry(
                "device.imported",
                SERIAL_PREFIX + p.unique_id,
                {
                    "signer_x5t": b64url_encode(p.verified.signer.thumbprint),
                    "part_number": p.verified.entry.element.part_number,
                },
            )
            for p in entries
        ],
    )


def _device_row(prepared: _Prepared, now: datetime.datetime) -> dict[str, object]:
    verified = prepared.verified
    element = verified.entry.element
    evidence = {
        "manifest": {
            "model": element.model,
            "partNumber": element.part_number,
            "groupId": element.group_id,
            "provisioningTimestamp": format_timestamp(element.provisioned_at),
            "signer_x5t#S256": b64url_encode(verified.signer.thumbprint),
            "keys": [key.kid for key in element.keys],
            # The identity certificate's issuers as the manifest carried them,
            # so cloud exports can hand the vendor's CA over with the device.
            "x5c_issuers": [b64_encode(der) for der in _issuers(element)],
        }
    }
    return {
        "serial": SERIAL_PREFIX + element.unique_id,
        "batch_id": None,
        "slot": None,
        "state": DeviceState.PRE_PROVISIONED.value,
        "rot_kind": element.model[:32],
        "unique_id": element.unique_id,
        "public_key": prepared.spki,
        "evidence": json.dumps(evidence, sort_keys=True),
        "created_at": now,
        "provisioned_at": element.provisioned_at,
        "attestation": "never",
    }


def _issuers(element: SecureElement) -> tuple[bytes, ...]:
    identity = element.identity_key()
    return () if identity is None else identity.x5c[1:]


def _certificate_row(device_id: int, kid: str, cert: x509.Certificate) -> dict[str, object]:
    """A vendor certificate: "issued" when the vendor made it, as far as keyfab knows."""
    return certificate_row(
        cert,
        device_id=device_id,
        key_label=kid,
        profile="vendor",
        issued_at=cert.not_valid_before_utc,
    )
