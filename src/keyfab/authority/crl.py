"""Each CA's CRL, with one CRLNumber rule for whoever asks.

RFC 5280 section 5.2.3: the CRLNumber increases strictly with every CRL a CA
issues and is never reused. Every CRL is therefore signed here and nowhere
else: the next number is one more than the newest recorded CRL's, taken while
the audit head is locked (every writer takes that lock), and the CRL is stored with
its ``ca.crl`` event in the same transaction, so two CRLs can never share a
number, whether the CLI, the API or two stations asked at once. The numbers
are one sequence for all the CAs, so each CA's own numbers increase too.

The CRL of a CA lists only the certificates that CA issued: after a rotation
the retired CA keeps signing the CRL of its own fleet, and a revocation of a
certificate it issued lands there, not on the new CA's CRL.

Fetching the CRL does not sign every time: the newest CRL is served again
while it still lists every revocation and has more than a third of its
validity left.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority import publication
from keyfab.authority.service import Authority
from keyfab.clock import utc_now
from keyfab.registry import AuditHead, Certificate, CrlRecord


def _revoked_by(ca: str) -> ColumnElement[bool]:
    """The one rule: CA ``ca``'s CRL lists the revoked certificates ``ca`` issued."""
    return and_(Certificate.issuer == ca, Certificate.revoked_at.is_not(None))


def _revocation_state(session: Session, ca: str) -> tuple[int, datetime.datetime | None]:
    """(how many of ``ca``'s certificates are revoked, the newest revocation time)."""
    count, newest = session.execute(
        select(func.count(), func.max(Certificate.revoked_at)).where(_revoked_by(ca))
    ).one()
    return int(count), newest


def _newest(session: Session, ca: str) -> CrlRecord | None:
    return session.scalars(
        select(CrlRecord).where(CrlRecord.ca == ca).order_by(CrlRecord.number.desc()).limit(1)
    ).first()


def _still_current(
    crl: CrlRecord | None, session: Session, now: datetime.datetime, validity: datetime.timedelta
) -> bool:
    """True if ``crl`` lists every revocation and has a third of ``validity`` left.

    Revocations are never undone, so the set of revoked certificates only
    grows: the same count and the same newest revocation time mean the same set.
    """
    if crl is None or crl.next_update - now < validity / 3:
        return False
    return _revocation_state(session, crl.ca) == (crl.revoked, crl.newest_revocation)


def current_crl(authority: Authority, ca: str | None = None) -> x509.CertificateRevocationList:
    """CA ``ca``'s CRL to publish (default: the issuing CA's): the newest one if still
    current, else a freshly signed one. An unknown ``ca`` is a NotFoundError."""
    name = authority.record_of(ca).name if ca else authority.issuing
    with authority.registry.reading() as session:
        newest = _newest(session, name)
        validity = publication.read(authority.registry).crl_validity
        if newest is not None and _still_current(newest, session, utc_now(), validity):
            return x509.load_der_x509_crl(newest.der)
    return new_crl(authority, name)


def _revoked(session: Session, ca: str) -> Iterator[pki.RevokedCertificate]:
    """Every revoked certificate ``ca`` issued as a CRL entry, oldest revocation first."""
    rows = session.execute(
        select(Certificate.serial_number, Certificate.revoked_at, Certificate.revocation_reason)
        .where(_revoked_by(ca))
        .order_by(Certificate.revoked_at, Certificate.id)
    )
    for serial, when, reason in rows:
        assert when is not None  # the where() above
        yield pki.RevokedCertificate(
            int(serial, 16), when, pki.RevocationReason.from_record(reason)
        )


def _next_number(session: Session) -> int:
    """One more than the newest recorded CRL's number.

    The first CRL recorded starts above the audit head: before CRLs were
    recorded (keyfab 0.1), every CRL took its number from an audit sequence
    number, so no number issued then can be reached again.
    """
    newest = session.scalar(select(func.max(CrlRecord.number)))
    if newest is None:
        newest = session.scalar(select(AuditHead.seq).where(AuditHead.id == 1)) or 0
    return int(newest) + 1


def new_crl(authority: Authority, ca: str | None = None) -> x509.CertificateRevocationList:
    """Sign CA ``ca``'s CRL (default: the issuing CA's) of every revoked certificate it
    issued, with the next CRLNumber and the workspace's validity, and record it."""
    name = authority.record_of(ca).name if ca else authority.issuing
    signer = authority.open_ca(name)  # the key opens (HSM login) before the lock is taken
    validity = publication.read(authority.registry).crl_validity  # the workspace's choice
    with authority.transaction() as session:
        audit.lock(session)  # from here to commit no other writer revokes or numbers a CRL
        now = utc_now()
        revoked = list(_revoked(session, name))
        number = _next_number(session)
        crl = signer.crl(revoked, now=now, next_update=validity, number=number)
        session.add(
            CrlRecord(
                number=number,
                ca=name,
                this_update=now,
                next_update=now + validity,
                revoked=len(revoked),
                newest_revocation=max((r.revoked_at for r in revoked), default=None),
                der=crl.public_bytes(Encoding.DER),
            )
        )
        details = {
            "number": number,
            "revoked": len(revoked),
            "next_update": (now + validity).isoformat(),
        }
        audit.append(session, "ca.crl", name, details)
    return crl
