"""Certificate authorities: a CA certificate plus a key that lives in a root of trust.

The key is any ``cryptography`` private key, in practice a ``keyfab.rot`` key held
by an HSM, a TPM or (for development) the soft driver. Issuing never sees
private key material: ``sign()`` runs wherever the key lives.
"""

from __future__ import annotations

import datetime
import functools
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyfab.clock import utc_now
from keyfab.errors import PkiError, VerificationError
from keyfab.pki.keypolicy import check_csr_signature, check_public_key
from keyfab.pki.profiles import UNPUBLISHED, Publication, Template
from keyfab.pki.revocation import RevokedCertificate

CAKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_BACKDATE = datetime.timedelta(minutes=5)
"""notBefore is set a little in the past so devices with a slow clock accept it."""


SignatureHash = hashes.SHA256 | hashes.SHA384


def signature_hash(key: CAKey | PublicKey) -> SignatureHash:
    """SHA-384 for P-384 and P-521 keys, SHA-256 otherwise (matching strength)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return hashes.SHA384() if key.curve.key_size > 256 else hashes.SHA256()
    return hashes.SHA256()


def serial_hex(certificate: x509.Certificate | int) -> str:
    """A certificate's serial number as the registry keys it: lowercase hex, no leading zeros."""
    number = certificate if isinstance(certificate, int) else certificate.serial_number
    return format(number, "x")


def new_serial_number() -> int:
    """A positive 159-bit random serial: unique and unguessable (RFC 5280, CA/B BR)."""
    return secrets.randbits(159) | (1 << 158)


def check_csr(csr: x509.CertificateSigningRequest) -> PublicKey:
    """The CSR's public key, once its self-signature proves possession of the key.

    The key policy (``keypolicy``) is checked first: a refused key or a SHA-1
    signature is turned away before any signature verification is paid for.
    """
    public_key = check_public_key(csr.public_key())
    check_csr_signature(csr)
    if not csr.is_signature_valid:
        raise VerificationError("CSR signature does not verify: no proof of possession")
    return public_key


def _build(
    template: Template,
    public_key: PublicKey,
    issuer: x509.Name,
    issuer_key_id: x509.AuthorityKeyIdentifier | None,
    serial_number: int,
    now: datetime.datetime,
    publication: Publication | None = None,
) -> x509.CertificateBuilder:
    not_before = now - _BACKDATE
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial_number)
        .not_valid_before(not_before)
        .not_valid_after(template.expiry(not_before))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_key_id is not None:
        builder = builder.add_extension(issuer_key_id, critical=False)
    extensions = template.extensions
    if publication is not None and template.profile not in UNPUBLISHED:
        extensions += publication.extensions()
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that can issue: its certificate, its key, and the chain above it."""

    certificate: x509.Certificate
    key: CAKey
    chain: tuple[x509.Certificate, ...] = ()  # issuers above this CA, up to the root
    publication: Publication | None = None  # AIA and CRL DP for what it issues, if configured

    def __post_init__(self) -> None:
        if self.certificate.public_key() != self.key.public_key():
            raise PkiError("the CA key does not match the CA certificate")

    @functools.cached_property
    def key_id(self) -> x509.AuthorityKeyIdentifier:
        """The authorityKeyIdentifier of everything this CA signs."""
        return _authority_key_id(self.certificate)

    @classmethod
    def create_root(
        cls, template: Template, key: CAKey, now: datetime.datetime | None = None
    ) -> CertificateAuthority:
        """A self-signed root CA from ``template`` (its key meets the key policy too)."""
        public_key = check_public_key(key.public_key())
        builder = _build(
            template,
            public_key,
            template.subject,
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key),
            new_serial_number(),
            now or utc_now(),
        )
        return cls(builder.sign(key, signature_hash(key)), key)

    def create_subordinate(
        self, template: Template, key: CAKey, now: datetime.datetime | None = None
    ) -> CertificateAuthority:
        """A CA below this one (the manufacturing CA below the root)."""
        certificate = self.issue(template, key.public_key(), now=now)
        return CertificateAuthority(certificate, key, (self.certificate, *self.chain))

    def issue(
        self,
        template: Template,
        public_key: PublicKey,
        *,
        serial_number: int | None = None,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """Sign a certificate for ``public_key`` following ``template``.

        Every issuer ends here, so the key policy is enforced here: no caller
        can get a certificate for a key it refuses.
        """
        check_public_key(public_key)
        builder = _build(
            template,
            public_key,
            self.certificate.subject,
            self.key_id,
            serial_number or new_serial_number(),
            now or utc_now(),
            self.publication,
        )
        return builder.sign(self.key, signature_hash(self.key))

    def issue_for_csr(
        self,
        template: Template,
        csr: x509.CertificateSigningRequest,
        *,
        serial_number: int | None = None,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """Check the CSR's proof of possession, then issue for its key."""
        return self.issue(template, check_csr(csr), serial_number=serial_number, now=now)

    def crl(
        self,
        revoked: Iterable[RevokedCertificate],
        *,
        now: datetime.datetime | None = None,
        next_update: datetime.timedelta = datetime.timedelta(days=7),
        number: int = 1,
    ) -> x509.CertificateRevocationList:
        """A CRL of ``revoked``; ``number`` is the caller's CRLNumber (never reused)."""
        moment = now or utc_now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(moment)
            .next_update(moment + next_update)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(self.key_id, critical=False)
        )
        for certificate in revoked:
            builder = builder.add_revoked_certificate(certificate.entry())
        return builder.sign(self.key, signature_hash(self.key))

    def full_chain(self) -> Sequence[x509.Certificate]:
        """This CA's certificate followed by its issuers up to the root."""
        return (self.certificate, *self.chain)


def _authority_key_id(certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(certificate.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)
