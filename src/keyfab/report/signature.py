"""Detached CMS signatures (RFC 5652 SignedData) over a pack's manifest: make and check.

Made with ``cryptography``'s PKCS#7 builder, so ``openssl cms -verify`` and
S/MIME tools read it: one signer, SHA-256, ECDSA P-256, signed attributes
(contentType, messageDigest, signingTime), the signer's and its CA's
certificates inside. ``cryptography`` cannot verify CMS, so ``check`` parses it
with pyasn1 and insists on exactly that shape: the input must re-encode to the
same DER, so no byte of it goes unchecked, whether signed or not.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from keyfab.clock import as_utc
from keyfab.errors import MissingExtraError, VerificationError
from keyfab.pki import Profile, verify_device_chain
from keyfab.pki.profiles import DOCUMENT_SIGNING
from keyfab.report._cms import SignedParts, parse_signed_data


def sign(
    content: bytes,
    key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    chain: tuple[x509.Certificate, ...],
) -> bytes:
    """A detached DER CMS signature over ``content`` by ``key`` (no S/MIME capabilities)."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(certificate, key, hashes.SHA256())
    for above in chain:
        builder = builder.add_certificate(above)
    options = [
        pkcs7.PKCS7Options.DetachedSignature,
        pkcs7.PKCS7Options.Binary,
        pkcs7.PKCS7Options.NoCapabilities,
    ]
    return builder.sign(Encoding.DER, options)


@dataclass(frozen=True)
class Signed:
    """Who signed a manifest and when they said they did."""

    signer: x509.Certificate
    signing_time: datetime.datetime


class ContentMismatchError(VerificationError):
    """The signature is good but covers other content than the one given."""


def check(signature: bytes, content: bytes, roots: list[x509.Certificate]) -> Signed:
    """Verify a detached signature over ``content`` up to ``roots``; VerificationError if not.

    Order matters for the message: first the signature over the signed
    attributes and the chain (a fault there is the signature file's), then the
    content's digest (a fault there is the content's: ``ContentMismatchError``).
    """
    try:
        return _check(signature, content, roots)
    except ImportError:
        raise MissingExtraError("keyfab report verify", "report") from None
    except (ValueError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.InvalidVersion):
        raise VerificationError("an embedded certificate is malformed") from None


def _check(signature: bytes, content: bytes, roots: list[x509.Certificate]) -> Signed:
    parts = parse_signed_data(signature)
    signer = _signer(parts)
    try:
        key = signer.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # _signer checked it
        key.verify(parts.signature, parts.signed_attributes, _ECDSA)
    except InvalidSignature:
        raise VerificationError("the signature does not verify with its signer's key") from None
    when = as_utc(parts.signing_time)
    verify_device_chain(signer, parts.certificates[1:], roots, at=when)
    if not hmac.compare_digest(parts.message_digest, hashlib.sha256(content).digest()):
        raise ContentMismatchError("does not match the digest its signature covers")
    return Signed(signer, when)


_ECDSA = ec.ECDSA(hashes.SHA256())


def _signer(parts: SignedParts) -> x509.Certificate:
    """The signer certificate, checked to be a report signer's with a P-256 key."""
    signer = parts.certificates[0]
    if not isinstance(signer.public_key(), ec.EllipticCurvePublicKey):
        raise VerificationError("the signer's key is not an EC key")
    try:
        usage = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = x509.ExtendedKeyUsage([])
    if DOCUMENT_SIGNING not in usage:
        raise VerificationError(f"the signer is not a {Profile.REPORT_SIGNER} certificate")
    return signer
