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
from collections.abc import Callable, Iterable
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


def _write_chunk(session: Session, reports: list[EntryReport], tell: Listener) -> None:
    """Classify and insert a chunk; outcomes are told in file order."""
    if not reports:
        return
    ids = [r.unique_id for r in reports if r.ok]
    existing = {
        uid: key
        for uid, key in session.execute(
            select(Device.unique_id, Device.public_key).where(Device.unique_id.in_(ids))
        )
    }
    serials = _certificate_serials(reports)
    taken = set(
        session.scalars(
            select(Certificate.serial_number).where(Certificate.serial_number.in_(serials))
        )
    )
    fresh: list[VerifiedEntry] = []
    for report in reports:
        if report.verified is None:
            tell(report, Outcome.REJECTED, report.error)
            continue
        outcome, reason = _classify(report.verified, existing, taken)
        if outcome is Outcome.IMPORTED:
            fresh.append(report.verified)
            taken.update(serial_hex(c) for c in _device_certificates(report.verified))
        tell(report, outcome, reason)
    _insert(session, fresh)


def _certificate_serials(reports: Iterable[EntryReport]) -> list[str]:
    return [
        serial_hex(cert)
        for r in reports
        if r.verified is not None
        for cert in _device_certificates(r.verified)
    ]


def _device_certificates(verified: VerifiedEntry) -> list[x509.Certificate]:
    return [key.certificates()[0] for key in verified.entry.element.keys if key.x5c]


def _identity_spki(verified: VerifiedEntry) -> bytes | None:
    identity = verified.entry.element.identity_key() or next(
        iter(verified.entry.element.keys), None
    )
    return None if identity is None else identity.public_key().public_bytes(*_SPKI)


def _classify(
    verified: VerifiedEntry, existing: dict[str | None, bytes | None], taken: set[str]
) -> tuple[Outcome, str | None]:
    unique_id = verified.entry.element.unique_id
    if unique_id in existing:
        known, ours = existing[unique_id] or b"", _identity_spki(verified) or b""
        if hmac.compare_digest(known, ours):
            return Outcome.PRESENT, None
        return Outcome.REJECTED, "uniqueId already in the registry with a different key"
    for cert in _device_certificates(verified):
        if serial_hex(cert) in taken:
            return Outcome.REJECTED, "a certificate with this serial number is already registered"
    return Outcome.IMPORTED, None


def _insert(session: Session, entries: list[VerifiedEntry]) -> None:
    if not entries:
        return
    now = utc_now()
    session.execute(insert(Device), [_device_row(v, now) for v in entries])
    ids = {
        uid: device_id
        for uid, device_id in session.execute(
            select(Device.unique_id, Device.id).where(
                Device.unique_id.in_([v.entry.element.unique_id for v in entries])
            )
        )
    }
    rows = [
        _certificate_row(ids[v.entry.element.unique_id], kid, cert)
        for v in entries
        for kid, cert in _labelled_certificates(v)
    ]
    if rows:
        session.execute(insert(Certificate), rows)
    audit.append_many(
        session,
        [
            audit.Entry(
                "device.imported",
                SERIAL_PREFIX + v.entry.element.unique_id,
                {
                    "signer_x5t": b64url_encode(v.signer.thumbprint),
                    "part_number": v.entry.element.part_number,
                },
            )
            for v in entries
        ],
    )


def _labelled_certificates(verified: VerifiedEntry) -> list[tuple[str, x509.Certificate]]:
    return [(key.kid, key.certificates()[0]) for key in verified.entry.element.keys if key.x5c]


def _device_row(verified: VerifiedEntry, now: datetime.datetime) -> dict[str, object]:
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
        "public_key": _identity_spki(verified),
        "evidence": json.dumps(evidence, sort_keys=True),
        "created_at": now,
        "provisioned_at": element.provisioned_at,
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
