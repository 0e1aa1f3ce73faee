"""The one CMS SignedData shape ``signature.sign`` makes, parsed strictly with pyasn1.

Anything else is refused: more or fewer than one signer, another digest or
signature algorithm, embedded content, missing attributes, or bytes that are
not the DER the structure re-encodes to. Sizes are checked before parsing.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from keyfab.errors import VerificationError

SIGNATURE_MAX = 64 * 1024
MAX_CERTIFICATES = 4
# The AlgorithmIdentifiers as cryptography writes them (sha256 with NULL parameters).
_SHA256 = bytes.fromhex("300d06096086480165030402010500")
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")


@dataclass(frozen=True)
class SignedParts:
    """What a verifier needs: the signed attributes as signed, and what they claim."""

    certificates: tuple[x509.Certificate, ...]  # the signer first
    signed_attributes: bytes  # DER as a SET OF, the bytes the signature covers
    signature: bytes
    message_digest: bytes
    signing_time: datetime.datetime


def parse_signed_data(data: bytes) -> SignedParts:
    """Parse ``data`` as one-signer detached SignedData; VerificationError if it is not."""
    if len(data) > SIGNATURE_MAX:
        raise VerificationError(f"larger than {SIGNATURE_MAX} bytes")
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.error import PyAsn1Error
    from pyasn1_modules import rfc5652

    try:
        info, rest = decoder.decode(data, asn1Spec=rfc5652.ContentInfo())
        if rest or encoder.encode(info) != data:
            raise VerificationError("not DER")
        if info["contentType"] != rfc5652.id_signedData:
            raise VerificationError("not CMS SignedData")
        inner = bytes(info["content"])
        signed, rest = decoder.decode(inner, asn1Spec=rfc5652.SignedData())
        if rest or encoder.encode(signed) != inner:  # its certificates are DER too
            raise VerificationError("SignedData is not DER")
        return _parts(signed, encoder.encode, rfc5652)
    except (PyAsn1Error, ValueError, KeyError) as error:
        raise VerificationError(f"not a CMS signature ({type(error).__name__})") from None


def _parts(signed: Any, encode: Any, m: Any) -> SignedParts:
    content = signed["encapContentInfo"]
    if content["eContentType"] != m.id_data or content["eContent"].isValue:
        raise VerificationError("not a detached signature over data")
    algorithms = [bytes(encode(a)) for a in signed["digestAlgorithms"]]
    infos = list(signed["signerInfos"])
    if algorithms != [_SHA256] or len(infos) != 1:
        raise VerificationError("not one SHA-256 signer")
    info = infos[0]
    if int(signed["version"]) != 1 or int(info["version"]) != 1:
        raise VerificationError("not a version 1 SignedData and SignerInfo")
    if bytes(encode(info["digestAlgorithm"])) != _SHA256:
        raise VerificationError("the signer's digest is not SHA-256")
    if bytes(encode(info["signatureAlgorithm"])) != _ECDSA_SHA256:
        raise VerificationError("the signature is not ECDSA with SHA-256")
    certificates = _certificates(signed["certificates"], info["sid"], encode)
    der = bytearray(encode(info["signedAttrs"]))
    der[0] = 0x31  # signed as a SET OF, stored as [0] IMPLICIT (RFC 5652 section 5.4)
    values = {str(a["attrType"]): list(a["attrValues"]) for a in info["signedAttrs"]}
    if str(m.id_contentType) not in values or len(values) != 3:
        raise VerificationError("not the signed attributes expected")
    digest = _one(values, str(m.id_messageDigest), m.MessageDigest())
    when = _one(values, str(m.id_signingTime), m.SigningTime())
    return SignedParts(
        certificates,
        bytes(der),
        bytes(info["signature"]),
        bytes(digest),
        when.getComponent().asDateTime,
    )


def _one(values: dict[str, list[Any]], oid: str, spec: Any) -> Any:
    from pyasn1.codec.der import decoder

    found = values.get(oid)
    if found is None or len(found) != 1:
        raise VerificationError(f"signed attribute {oid} missing or repeated")
    value, rest = decoder.decode(found[0], asn1Spec=spec)
    if rest:
        raise VerificationError(f"signed attribute {oid} has trailing bytes")
    return value


def _certificates(embedded: Any, sid: Any, encode: Any) -> tuple[x509.Certificate, ...]:
    """The embedded certificates (at most a few), the one the signer identifier names first."""
    if any(len(c["certificate"]["signature"]) % 8 for c in embedded):
        # Valid DER of a shorter bit string that ``cryptography`` reads as the same
        # signature octets: accepting it would let the file change and still verify.
        raise VerificationError("an embedded certificate's signature is not whole octets")
    loaded = [x509.load_der_x509_certificate(encode(c["certificate"])) for c in embedded]
    wanted = sid["issuerAndSerialNumber"]
    serial, issuer = int(wanted["serialNumber"]), bytes(encode(wanted["issuer"]))
    signers = [c for c in loaded if c.serial_number == serial and c.issuer.public_bytes() == issuer]
    if len(signers) != 1 or len(loaded) > MAX_CERTIFICATES:
        raise VerificationError("the signer's certificate is not the one embedded")
    return (signers[0], *(c for c in loaded if c is not signers[0]))
