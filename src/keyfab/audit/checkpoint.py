"""Signed checkpoints: the chain's head, signed by a CA key.

A hash chain alone proves order, not authorship: someone who can write to the
database can rebuild every link and the head. A checkpoint is the head (its
sequence number and hash) signed by the manufacturing CA's key, which lives in
an HSM in production, so a rebuilt chain no longer matches the signatures
an auditor checks against a certificate they trust.
"""

from __future__ import annotations

import base64
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

from keyfab.audit.log import GENESIS, append, canonical_json
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


def sign_checkpoint(session: Session, key: SigningKey, certificate: x509.Certificate) -> int:
    """Append a checkpoint over the current head, in the caller's transaction."""
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).one()
    signature = _sign(key, statement(head.seq, head.hash))
    data = {
        "seq": head.seq,
        "head": head.hash,
        "signature": base64.b64encode(signature).decode(),
        "certificate": base64.b64encode(certificate.public_bytes(Encoding.DER)).decode(),
    }
    return append(session, KIND, certificate.subject.rfc4514_string(), data)


@dataclass(frozen=True)
class CheckpointReport:
    checked: int
    latest: int | None  # seq covered by the newest valid checkpoint


@dataclass(frozen=True)
class _Checkpoint:
    seq: int
    head: str
    signature: bytes
    certificate: bytes

    @classmethod
    def parse(cls, event: AuditEvent) -> _Checkpoint:
        try:
            data = json.loads(event.data)
            return cls(
                int(data["seq"]),
                str(data["head"]),
                base64.b64decode(data["signature"]),
                base64.b64decode(data["certificate"]),
            )
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"checkpoint {event.seq} is malformed") from None


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
        point = _Checkpoint.parse(event)
        if not any(hmac.compare_digest(point.certificate, t) for t in trusted_der):
            raise AuditError(f"checkpoint {event.seq} is signed by an untrusted certificate")
        signer = x509.load_der_x509_certificate(point.certificate)
        if not _verify(signer, point.signature, statement(point.seq, point.head)):
            raise AuditError(f"checkpoint {event.seq} has a bad signature")
        covered = session.get(AuditEvent, point.seq)
        stored = covered.hash if covered is not None else GENESIS if point.seq == 0 else ""
        if not hmac.compare_digest(stored, point.head):
            raise AuditError(f"checkpoint {event.seq} does not match event {point.seq} as stored")
        checked, latest = checked + 1, point.seq
    return CheckpointReport(checked, latest)
