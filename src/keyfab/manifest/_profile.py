"""The manifest-signer certificate profile.

This belongs in ``keyfab.pki`` profiles; it lives here until the PKI lands on
main, written as a pure function of (public key, issuer) so it can move there
unchanged and be handed to ``CertificateAuthority.issue(csr, profile=...)``.

A manifest signer signs JWS entries and nothing else: an end-entity P-256 key
(ES256 needs it) with digitalSignature only, a subject key identifier because
manifests name the signer by it in ``kid``, and no EKU (Microchip's signers
carry none and no registered EKU means "manifest signing").
"""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab._time import utc_now
from keyfab.errors import PkiError

MANIFEST_SIGNER_DAYS = 3 * 365


def manifest_signer_extensions(
    public_key: ec.EllipticCurvePublicKey, issuer: x509.Certificate | None
) -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions (value, critical) of a manifest-signer certificate."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise PkiError("a manifest signer needs a P-256 key (ES256)")
    issuer_key_id = (
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key())  # type: ignore[arg-type]
        if issuer is not None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    )
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=False,
                       crl_sign=False, encipher_only=False, decipher_only=False), True),
        (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
        (issuer_key_id, False),
    ]


def issue_manifest_signer(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    serial_number: int,
    not_before: datetime.datetime | None = None,
    days: int = MANIFEST_SIGNER_DAYS,
) -> x509.Certificate:
    """Issue a manifest-signer certificate (self-signed when ``issuer`` is None).

    ``issuer_key`` may be any ``keyfab.rot`` key: it is a ``cryptography`` key.
    """
    start = not_before or utc_now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
    )
    for extension, critical in manifest_signer_extensions(public_key, issuer):
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())
