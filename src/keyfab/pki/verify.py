"""Chain verification for device certificates, with an explicit extension policy.

``cryptography``'s default client policy expects a TLS client certificate (an
extendedKeyUsage of clientAuth, a subjectAltName it understands). An IEEE 802.1AR
IDevID carries neither by design, so keyfab states its own end-entity policy:
keyUsage present and critical with digitalSignature, no CA basic constraints.
CA certificates keep the Web PKI defaults.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509 import verification

from keyfab.clock import utc_now
from keyfab.errors import VerificationError


def _key_usage_signs(
    policy: verification.Policy, certificate: x509.Certificate, usage: x509.KeyUsage | None
) -> None:
    if usage is None or not usage.digital_signature:
        raise ValueError("keyUsage must allow digitalSignature")


def _not_a_ca(
    policy: verification.Policy,
    certificate: x509.Certificate,
    constraints: x509.BasicConstraints | None,
) -> None:
    if constraints is not None and constraints.ca:
        raise ValueError("a device certificate must not be a CA")


def device_policy() -> verification.ExtensionPolicy:
    """The end-entity policy for IDevID-style device certificates."""
    return (
        verification.ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, verification.Criticality.CRITICAL, _key_usage_signs)
        .may_be_present(x509.BasicConstraints, verification.Criticality.AGNOSTIC, _not_a_ca)
    )


def device_verifier(
    roots: Sequence[x509.Certificate],
    *,
    at: datetime.datetime | None = None,
    max_depth: int | None = None,
) -> verification.ClientVerifier:
    """A verifier for device certificates up to ``roots``: Web PKI CAs, the device policy."""
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(list(roots)))
        .time(at or utc_now())
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=device_policy(),
        )
    )
    if max_depth is not None:
        builder = builder.max_chain_depth(max_depth)
    return builder.build_client_verifier()


def verify_device_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: datetime.datetime | None = None,
) -> list[x509.Certificate]:
    """The verified chain from ``leaf`` to one of ``roots``, or VerificationError."""
    verifier = device_verifier(roots, at=at)
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except verification.VerificationError as error:
        raise VerificationError(f"certificate chain does not verify: {error}") from None
