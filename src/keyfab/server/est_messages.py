"""EST (RFC 7030) message formats, with no policy and no HTTP in them.

Requests carry a base64 DER PKCS#10; answers are base64 DER: a certs-only CMS
SignedData (PKCS#7) for certificates, a ``CsrAttrs`` SEQUENCE for csrattrs.
RFC 8951 settles that the base64 is plain (line breaks allowed, no MIME
headers inside the body).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import AttributeOID, NameOID, SignatureAlgorithmOID

PKCS10 = "application/pkcs10"
CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS = "application/csrattrs"
MAX_CSR_BYTES = 16_384
"""A DER CSR for a P-521 or RSA-4096 key with a few extensions is well under this."""

_BASE64 = re.compile(rb"[A-Za-z0-9+/=\s]*")
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_SECP256R1 = "1.2.840.10045.3.1.7"


class MessageError(ValueError):
    """The request is not a well-formed EST message; ``slug`` names the problem."""

    def __init__(self, slug: str, detail: str):
        super().__init__(detail)
        self.slug = slug


def decode_base64(body: bytes) -> bytes:
    """Strict base64 with any whitespace and line breaks ignored."""
    if len(body) > MAX_CSR_BYTES * 4 // 3 + 1024:
        raise MessageError("payload-too-large", "the base64 body is too large for a CSR")
    if not _BASE64.fullmatch(body):
        raise MessageError("malformed-base64", "the body is not base64")
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        raise MessageError("malformed-base64", "the body is not valid base64") from None


def decode_csr(body: bytes) -> x509.CertificateSigningRequest:
    """The PKCS#10 request in an EST enrolment body."""
    der = decode_base64(body)
    if not der:
        raise MessageError("malformed-csr", "the body is empty")
    try:
        return x509.load_der_x509_csr(der)
    except ValueError:
        raise MessageError("malformed-csr", "the body is not a DER PKCS#10 request") from None


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A base64 certs-only PKCS#7 (degenerate SignedData) of ``certificates``."""
    der = pkcs7.serialize_certificates(list(certificates), Encoding.DER)
    return base64.encodebytes(der)


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        body = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(body)]) + body
    return bytes([tag]) + length + value


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def csr_attributes() -> bytes:
    """What keyfab wants in a CSR, as base64 ``CsrAttrs`` (RFC 7030 section 4.5.2).

    challengePassword: bind the CSR to the TLS session with tls-unique (TLS 1.2);
    a serialNumber in the subject; an EC P-256 key; ECDSA with SHA-256.
    """
    items = [
        _oid(AttributeOID.CHALLENGE_PASSWORD.dotted_string),
        _oid(NameOID.SERIAL_NUMBER.dotted_string),
        _tlv(0x30, _oid(_EC_PUBLIC_KEY) + _tlv(0x31, _oid(_SECP256R1))),
        _oid(SignatureAlgorithmOID.ECDSA_WITH_SHA256.dotted_string),
    ]
    return base64.encodebytes(_tlv(0x30, b"".join(items)))
