"""OCSP messages (RFC 6960, RFC 5019 profile): read a request, sign a response.

Only ``cryptography``'s OCSP API touches DER here. A request is untrusted
bytes: its size is checked before it is parsed, and anything that does not
parse, or carries a nonce outside RFC 8954's 1..32 octets, is a
``MalformedRequestError`` the responder answers with ``malformedRequest``.

``cryptography`` reads and writes exactly one CertID per message (RFC 5019
section 2.1.1 asks clients for one, and every common client sends one); a
request naming several is answered ``malformedRequest`` too.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import ocsp

from keyfab.errors import KeyfabError
from keyfab.pki.ca import CAKey, signature_hash
from keyfab.pki.revocation import RevocationReason

MAX_REQUEST = 2048
"""Bytes. A one-CertID request with a 32-octet nonce and a signature fits in far less."""

NONCE_LIMITS = (1, 32)
"""RFC 8954 section 2.1: a nonce is 1 to 32 octets."""

CERT_ID_HASHES: tuple[hashes.HashAlgorithm, ...] = (
    hashes.SHA1(),  # noqa: S303 - RFC 5019's CertID hash, not a signature
    hashes.SHA256(),
    hashes.SHA384(),
    hashes.SHA512(),
)
"""The CertID hashes a responder recognises (OpenSSL sends SHA-1 unless told otherwise)."""

MEDIA_REQUEST = "application/ocsp-request"
MEDIA_RESPONSE = "application/ocsp-response"


class MalformedRequestError(KeyfabError):
    """The bytes are not an OCSP request keyfab answers: ``malformedRequest``."""


@dataclass(frozen=True)
class Request:
    """The one CertID of a request, and its nonce if it sent one."""

    algorithm: hashes.HashAlgorithm
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    serial_number: int
    nonce: bytes | None

    @property
    def issuer(self) -> tuple[str, bytes, bytes]:
        """What identifies the CA asked about: (hash name, name hash, key hash)."""
        return self.algorithm.name, self.issuer_name_hash, self.issuer_key_hash


def parse_request(der: bytes) -> Request:
    """The request in ``der``, or MalformedRequestError (the size is checked first)."""
    if not 0 < len(der) <= MAX_REQUEST:
        raise MalformedRequestError(f"an OCSP request is 1 to {MAX_REQUEST} bytes")
    try:
        request = ocsp.load_der_ocsp_request(der)
        found = Request(
            request.hash_algorithm,
            request.issuer_name_hash,
            request.issuer_key_hash,
            request.serial_number,
            _nonce(request.extensions),
        )
    except (ValueError, TypeError, NotImplementedError, UnsupportedAlgorithm):
        raise MalformedRequestError("not a DER OCSP request with one CertID") from None
    return found


def _nonce(extensions: x509.Extensions) -> bytes | None:
    try:
        nonce = extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None
    low, high = NONCE_LIMITS
    if not low <= len(nonce) <= high:
        raise MalformedRequestError(f"the nonce must be {low} to {high} octets (RFC 8954)")
    return nonce


def issuer_ids(certificate: x509.Certificate) -> list[tuple[str, bytes, bytes]]:
    """Every (hash name, issuerNameHash, issuerKeyHash) a CertID may name CA ``certificate`` by."""
    name = certificate.subject.public_bytes()
    key = _subject_public_key(certificate)
    return [(a.name, _digest(a, name), _digest(a, key)) for a in CERT_ID_HASHES]


def _subject_public_key(certificate: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's contents, which issuerKeyHash hashes (RFC 6960 4.1.1)."""
    key = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(Encoding.DER, PublicFormat.PKCS1)
    raise MalformedRequestError("the CA key is neither EC nor RSA")


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


@dataclass(frozen=True)
class Signer:
    """A delegated responder: its certificate (issued by the CA) and its key."""

    certificate: x509.Certificate
    key: CAKey


@dataclass(frozen=True)
class Status:
    """A certificate's status as an OCSP answer gives it."""

    status: ocsp.OCSPCertStatus
    revoked_at: datetime.datetime | None = None
    reason: RevocationReason | None = None


GOOD = Status(ocsp.OCSPCertStatus.GOOD)
UNKNOWN = Status(ocsp.OCSPCertStatus.UNKNOWN)


def revoked(when: datetime.datetime, reason: RevocationReason) -> Status:
    return Status(ocsp.OCSPCertStatus.REVOKED, when, reason)


def sign_response(
    signer: Signer,
    request: Request,
    status: Status,
    this_update: datetime.datetime,
    next_update: datetime.datetime,
    *,
    nonce: bytes | None = None,
) -> bytes:
    """A successful, signed BasicOCSPResponse for ``request``'s CertID, as DER.

    The responder is named by key hash (RFC 5019 section 2.2.3) and its
    certificate travels with the response, so a client that trusts the CA
    can check the delegation. ``nonce`` is echoed when the client sent one.
    """
    reason = status.reason
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=request.algorithm,
            cert_status=status.status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=status.revoked_at,
            revocation_reason=None if reason is None else reason.flag,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.certificate)
        .certificates([signer.certificate])
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    response = builder.sign(signer.key, signature_hash(signer.key))
    return response.public_bytes(Encoding.DER)


def error_response(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned OCSPResponse carrying only an error status, as DER."""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER)
