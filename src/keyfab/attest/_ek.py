"""EK certificate verification with an explicit extension policy.

An EK certificate is no TLS certificate: it has no clientAuth EKU, an empty
subject and a critical subjectAltName holding the TPM manufacturer, model and
version (TCG EK Credential Profile 3.2.9). cryptography's default client
policy rejects it, so the end-entity policy here is written out: any extension
may appear, the EKU (if present) must contain tcg-kp-EKCertificate, and the
SAN's TPM manufacturer is what the vendor policy looks at. CA certificates keep
the Web PKI defaults (basicConstraints, keyUsage keyCertSign).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ObjectIdentifier

from keyfab.attest.policy import Tpm2Policy
from keyfab.errors import VerificationError

TCG_KP_EK_CERTIFICATE = ObjectIdentifier("2.23.133.8.1")
TPM_MANUFACTURER = ObjectIdentifier("2.23.133.2.1")


def _check_eku(
    policy: verification.Policy, certificate: x509.Certificate, eku: x509.ExtendedKeyUsage | None
) -> None:
    if eku is not None and TCG_KP_EK_CERTIFICATE not in eku:
        raise ValueError("EK certificate EKU lacks tcg-kp-EKCertificate (2.23.133.8.1)")


def _ee_policy() -> verification.ExtensionPolicy:
    return verification.ExtensionPolicy.permit_all().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _check_eku
    )


def manufacturer_of(certificate: x509.Certificate) -> str:
    """The TPM manufacturer (``id:XXXXXXXX``) from the EK certificate's SAN, or ''."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ""
    for name in san.get_values_for_type(x509.DirectoryName):
        for attribute in name.get_attributes_for_oid(TPM_MANUFACTURER):
            return str(attribute.value)
    return ""


def verify_ek_certificate(der: bytes, ek_public_der: bytes, policy: Tpm2Policy) -> str:
    """Check the EK certificate chains to a vendor root and is for this EK; return the vendor."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise VerificationError("EK certificate is not DER X.509") from None
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if spki != ek_public_der:
        raise VerificationError("EK certificate is not for the EK in the evidence")
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(policy.ek_roots)))
        .time(policy.now)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=_ee_policy()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(certificate, list(policy.ek_intermediates))
    except verification.VerificationError as error:
        raise VerificationError(
            f"EK certificate does not chain to a configured TPM vendor root: {error}"
        ) from None
    vendor = manufacturer_of(certificate)
    if policy.manufacturers and vendor not in policy.manufacturers:
        raise VerificationError(
            f"EK certificate is from TPM manufacturer {vendor or 'unknown'!r}, not allowed"
        )
    return vendor
