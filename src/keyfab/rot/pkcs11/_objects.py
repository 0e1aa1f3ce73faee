"""Templates for what keyfab writes into a token besides keys.

Data (certificates, chains, manifests) is kept byte for byte as a CKO_DATA object,
so reading it back returns exactly what was written and provisioning can compare.
Certificates are *also* written as CKO_CERTIFICATE objects, each with the CKA_ID of
the token key it certifies: that is where TLS stacks, OpenSSL providers and
``pkcs11-tool`` look for a key's certificate.
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from pkcs11 import Attribute, CertificateType, ObjectClass

APPLICATION = "keyfab"
MAX_OBJECT = 1 << 16
"""Largest object keyfab writes: chains and manifests are a few kB; tokens are small."""


def data_template(label: str, data: bytes) -> dict[Attribute, Any]:
    """A public, token-resident data object owned by keyfab."""
    return {
        Attribute.CLASS: ObjectClass.DATA,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: label,
        Attribute.APPLICATION: APPLICATION,
        Attribute.VALUE: data,
    }


def certificates_in(data: bytes) -> list[x509.Certificate]:
    """The certificates ``data`` holds (one DER, or PEM with one or more), else none."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        return []


def public_key_id(certificate: x509.Certificate) -> bytes:
    """A CKA_ID for a certificate whose key is not in the token: SHA-1 of its key."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - an identifier, not a security hash
    digest.update(spki)
    return digest.finalize()


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    return bytes([0x02, len(body)]) + body


def certificate_template(label: str, key_id: bytes, cert: x509.Certificate) -> dict[Attribute, Any]:
    """A public X.509 certificate object, linked to its key by CKA_ID."""
    return {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.SUBJECT: cert.subject.public_bytes(),
        Attribute.ISSUER: cert.issuer.public_bytes(),
        Attribute.SERIAL_NUMBER: _der_integer(cert.serial_number),
        Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
    }


def certificate_labels(label: str, count: int) -> list[str]:
    """``label`` for the first (leaf) certificate, ``label.1``... for the chain above it."""
    return [label if i == 0 else f"{label}.{i}" for i in range(count)]
