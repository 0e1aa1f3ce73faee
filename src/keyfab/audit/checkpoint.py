"""Signed checkpoints: the chain's head, signed by a CA key.

A hash chain alone proves order, not authorship: someone who can write to the
database can rebuild every link and the head. A checkpoint is the head (its
sequence number and hash) signed by the manufacturing CA's key, which lives in
an HSM in production, so a rebuilt chain no longer matches the signatures
an auditor checks against a certificate they trust.

A checkpoint kept only in the database can be deleted with the events it
covers, though: ``keyfab.audit.witness`` also writes each one outside it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyfab.audit.log import GENESIS, append, canonical_json, lock
from keyfab.errors import AuditError
from keyfab.registry.models import AuditEvent, AuditHead

KIND = "audit.checkpoint"
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def statement(seq: int, head: str) -> bytes:
    """The bytes a checkpoint signs."""
    return canonical_json({"keyfab-audit-checkpoint": 1, "seq": seq, "head": head}).encode()


def _sign(key: SigningKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _verify(certificate: x509.Certificate, signature: bytes, data: bytes) -> bool:
    public_key = certificate.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class SignedHead:
    """A signed statement that the chain's event ``seq`` has hash ``head``.

    The same statement lives in the log (as an ``audit.checkpoint`` event) and,
    once that event commits, in a witness file outside the database: it is
    checked the same way wherever it is read from.
    """

    seq: int
    head: str
    signature: bytes
    certificate: bytes  # DER of the signer's certificate

    def to_data(self) -> dict[str, int | str]:
        """The JSON fields, as the checkpoint event and the witness file hold them."""
        return {
            "seq": self.seq,
            "head": self.head,
            "signature": base64.b64encode(self.signature).decode(),
            "certificate": base64.b64encode(self.certificate).decode(),
        }

    @classmethod
    def from_data(cls, data: object) -> SignedHead:
        """Parse ``to_data``'s fields; ValueError if anything is missing or mistyped."""
        if not isinstance(data, dict):
            raise ValueError("a signed head is a JSON object")
        try:
            seq, head = data["seq"], data["head"]
            if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(head, str):
                raise ValueError("seq or head has the wrong type")
            return cls(
                seq,
                head,
                base64.b64decode(data["signature"], validate=True),
                base64.b64decode(data["certificate"], validate=True),
            )
        except (KeyError, TypeError, binascii.Error) as error:
            raise ValueError(f"malformed signed head: {error!r}") from None

    def problem(self, trusted_der: Sequence[bytes]) -> str:
        """Why this statement is not a valid one by a trusted signer ("" if it is)."""
        if not any(hmac.compare_digest(self.certificate, t) for t in trusted_der):
            return "is signed by an untrusted certificate"
        try:
            signer = x509.load_der_x509_certificate(self.certificate)
        except ValueError:
            return "carries an unreadable certificate"
        if not _verify(signer, self.signature, statement(self.seq, self.head)):
            return "has a bad signature"
        return ""


def sign_head(session: Session, key: SigningKey, certificate: x509.Certificate) -> SignedHead:
    """Sign the current head, holding the head's lock so no writer moves it meanwhile."""
    lock(session)
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    signature = _sign(key, statement(head.seq, head.hash))
    return SignedHead(head.seq, head.hash, signature, certificate.public_bytes(Encoding.DER))


def append_checkpoint(session: Session, point: SignedHead) -> int:
    """Record a signed head as the next event, in the caller's transaction."""
    signer = x509.load_der_x509_certificate(point.certificate)
    return append(session, KIND, signer.subject.rfc4514_string(), point.to_data())


def sign_checkpoint(session: Session, key: SigningKey, certificate: x509.Certificate) -> int:
    """Append a checkpoint over the current head, in the caller's transaction."""
    return append_checkpoint(session, sign_head(session, key, certificate))


@dataclass(frozen=True)
class CheckpointReport:
    checked: int
    latest: int | None  # seq covered by the newest valid checkpoint


def _parse(event: AuditEvent) -> SignedHead:
    try:
        return SignedHead.from_data(json.loads(event.data))
    except ValueError:
        raise AuditError(f"checkpoint {event.seq} is malformed") from None


def judge(data: str, covered_hash: str | None, trusted_der: Sequence[bytes]) -> str:
    """Why one recorded checkpoint does not hold ("" if it does): the dashboard's check.

    ``data`` is the event's stored JSON, ``covered_hash`` the hash the chain
    holds at the event it names. The same two tests as ``verify_checkpoints``,
    for one checkpoint, without walking the log.
    """
    try:
        point = SignedHead.from_data(json.loads(data))
    except ValueError:
        return "is malformed"
    problem = point.problem(trusted_der)
    if problem:
        return problem
    stored = covered_hash if covered_hash is not None else GENESIS if point.seq == 0 else ""
    if not hmac.compare_digest(stored, point.head):
        return f"does not match event {point.seq} as stored"
    return ""


def verify_checkpoints(session: Session, trusted: Sequence[x509.Certificate]) -> CheckpointReport:
    """Check every checkpoint's signature and that it matches the chain as stored.

    ``trusted`` are the signer certificates the auditor accepts (obtained out of
    band); a checkpoint signed by anyone else is an error, not a pass.
    """
    trusted_der = [c.public_bytes(Encoding.DER) for c in trusted]
    checked, latest = 0, None
    for event in session.scalars(
        select(AuditEvent).where(AuditEvent.kind == KIND).order_by(AuditEvent.seq)
    ):
        point = _parse(event)
        problem = point.problem(trusted_der)
        if problem:
            raise AuditError(f"checkpoint {event.seq} {problem}")
        covered = session.get(AuditEvent, point.seq)
        stored = covered.hash if covered is not None else GENESIS if point.seq == 0 else ""
        if not hmac.compare_digest(stored, point.head):
            raise AuditError(f"checkpoint {event.seq} does not match event {point.seq} as stored")
        checked, latest = checked + 1, point.seq
    return CheckpointReport(checked, latest)
