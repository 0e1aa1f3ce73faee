"""Loading trusted certificates (manifest signers, device roots) from files.

A signer is trusted because an operator put its certificate in the signers
directory, so it is chosen by the exact SHA-256 of its DER (``x5t#S256``), never
by name. Lookup compares against every candidate with ``hmac.compare_digest``
so the time it takes does not depend on which certificate matched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyfab.pki.files import load_certificates


def thumbprint(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the DER encoding: the JOSE ``x5t#S256`` value."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def subject_key_id(certificate: x509.Certificate) -> bytes | None:
    """The subject key identifier extension's value, if the certificate has one."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return extension.value.digest
    except x509.ExtensionNotFound:
        return None


@dataclass(frozen=True)
class Signer:
    """A trusted manifest-signer certificate with the values entries name it by."""

    certificate: x509.Certificate
    thumbprint: bytes
    key_id: bytes | None


class SignerSet:
    """The manifest signers an operator trusts, chosen by ``x5t#S256``."""

    def __init__(self, certificates: list[x509.Certificate]) -> None:
        self._signers = [Signer(c, thumbprint(c), subject_key_id(c)) for c in certificates]

    @classmethod
    def from_path(cls, path: Path) -> SignerSet:
        return cls(load_certificates(path))

    def __len__(self) -> int:
        return len(self._signers)

    def find(self, wanted: bytes) -> Signer | None:
        """The signer whose certificate hashes to ``wanted``, or None."""
        found: Signer | None = None
        for signer in self._signers:
            if hmac.compare_digest(signer.thumbprint, wanted):
                found = signer
        return found
