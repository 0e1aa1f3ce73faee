"""CMP state in the registry: one-time bootstrap secrets and transactions.

A secret is never stored: it is HMAC-SHA256(the workspace's CMP key file,
its reference), so the service recomputes it from the reference a request
names (its senderKID) and a copy of the database alone reveals nothing. The
row holds the reference, the one device serial it may enrol, its uses left,
its expiry and whether an operator must approve first (deferred issuance).

Transactions are rows too, so every worker and every station on one
PostgreSQL agrees: a transactionID is accepted once, ever, and each follow-up
(certConf, pollReq) must echo the senderNonce of keyfab's last answer.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keyfab import audit
from keyfab.authority import Authority
from keyfab.clock import utc_now
from keyfab.cmp._errors import CmpError
from keyfab.errors import ConfigError, NotFoundError
from keyfab.registry import Certificate, CmpSecret, CmpTransaction
from keyfab.securefile import read_bounded, write_secret

KEY_FILE = "cmp-mac.key"
WAITING, CONFIRM, DONE, EXPIRED = "waiting", "confirm", "done", "expired"


def folder(home: Path) -> Path:
    """Where the CMP key files live: ``<home>/cmp/``."""
    return home / "cmp"


def mac_key(folder: Path) -> bytes:
    """The workspace's 32-byte CMP key (created 0600 on first use)."""
    path = folder / KEY_FILE
    if not path.exists():
        folder.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another process made it first
            write_secret(path, secrets.token_bytes(32), sync=True)
    key = read_bounded(path, 64, "CMP key file")
    if len(key) != 32:
        raise ConfigError(f"{path} is not a CMP key file (32 bytes)")
    return key


def derive(key: bytes, reference: str) -> bytes:
    """The secret for ``reference``: what the user passes as ``-secret pass:...``."""
    digest = hmac.digest(key, reference.encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:18])


@dataclass(frozen=True)
class NewSecret:
    reference: str
    secret: str  # shown once
    device_serial: str
    expires_at: datetime.datetime
    needs_approval: bool


def create_secret(
    authority: Authority,
    key: bytes,
    device_serial: str,
    lifetime: datetime.timedelta,
    *,
    needs_approval: bool,
    by: str,
) -> NewSecret:
    """A one-time bootstrap secret for one device serial; its creation is audited."""
    reference = secrets.token_hex(8)
    now = utc_now()
    row = CmpSecret(
        reference=reference,
        device_serial=device_serial,
        uses_left=1,
        needs_approval=int(needs_approval),
        created_at=now,
        expires_at=now + lifetime,
    )
    details = {"device": device_serial, "expires_at": row.expires_at.isoformat(), "by": by}
    with authority.transaction() as session:
        session.add(row)
        audit.append(session, "cmp.secret_created", reference, details)
    secret = derive(key, reference).decode()
    return NewSecret(reference, secret, device_serial, row.expires_at, needs_approval)


def approve(authority: Authority, reference: str, *, by: str) -> bool:
    """Let a deferred request under ``reference`` be issued; False if already approved."""
    with authority.transaction() as session:
        row = session.get(CmpSecret, reference, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no CMP secret {reference!r}", slug="cmp-secret-not-found")
        if row.approved_at is not None:
            return False
        row.approved_at = utc_now()
        audit.append(session, "cmp.approved", reference, {"device": row.device_serial, "by": by})
        return True


@dataclass(frozen=True)
class Secret:
    """A usable secret as a request found it."""

    reference: str
    device_serial: str
    approved: bool


def find_secret(authority: Authority, reference: str) -> Secret | None:
    """The secret ``reference`` names, if it has not expired.

    A used-up secret still authenticates the rest of its transaction (certConf,
    pollReq); ``spend`` refuses a second certificate under it.
    """
    with authority.registry.reading() as session:
        row = session.get(CmpSecret, reference)
        if row is None or row.expires_at <= utc_now():
            return None
        approved = not row.needs_approval or row.approved_at is not None
        return Secret(row.reference, row.device_serial, approved)


def spend(session: Session, reference: str) -> None:
    """Use the secret up, in the transaction that records the certificate."""
    row = session.get(CmpSecret, reference, with_for_update=True)
    if row is None or row.uses_left < 1:
        raise CmpError("notAuthorized", "the secret is used up")
    row.uses_left -= 1


def begin(
    session: Session,
    transaction_id: bytes,
    nonce: bytes,
    sender: str,
    state: str,
    expires_at: datetime.datetime,
    **fields: object,
) -> None:
    """Record a new transaction; a transactionID seen before is refused (replay)."""
    row = CmpTransaction(
        id=transaction_id.hex(),
        state=state,
        nonce=nonce.hex(),
        sender=sender,
        created_at=utc_now(),
        expires_at=expires_at,
        **fields,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise CmpError("transactionIdInUse", "this transactionID was used before") from None


def follow(
    session: Session, transaction_id: bytes, recip_nonce: bytes | None, sender: str
) -> CmpTransaction:
    """The transaction a follow-up message continues (row locked), its nonce checked."""
    row = session.scalars(
        select(CmpTransaction).where(CmpTransaction.id == transaction_id.hex()).with_for_update()
    ).one_or_none()
    if row is None or row.state in (DONE, EXPIRED):
        raise CmpError("badRequest", "no open transaction with this transactionID")
    if recip_nonce is None or not hmac.compare_digest(bytes.fromhex(row.nonce), recip_nonce):
        raise CmpError("badRecipientNonce", "recipNonce is not keyfab's last senderNonce")
    if row.sender != sender:
        raise CmpError("notAuthorized", "this transaction belongs to another sender")
    return row


def unconfirmed(session: Session, limit: int = 20) -> list[CmpTransaction]:
    """Transactions whose certificate was never confirmed in time (oldest first)."""
    return list(
        session.scalars(
            select(CmpTransaction)
            .where(CmpTransaction.state == CONFIRM, CmpTransaction.expires_at < utc_now())
            .order_by(CmpTransaction.expires_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def note_certificate(session: Session, transaction_id: bytes, serial_number: str) -> None:
    row = session.get(CmpTransaction, transaction_id.hex())
    if row is not None:
        row.certificate_serial = serial_number


def certificate(session: Session, serial_number: str) -> x509.Certificate:
    der = session.scalars(
        select(Certificate.der).where(Certificate.serial_number == serial_number)
    ).one()
    return x509.load_der_x509_certificate(der)
