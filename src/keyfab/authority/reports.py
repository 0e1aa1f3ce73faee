"""Evidence packs as the authority sees them: a certified one-time key and one audit event.

The manufacturing CA never signs a report itself (its key certifies and signs
CRLs, nothing else). For each pack it certifies a fresh P-256 key (profile
``report-signer``); the caller signs the pack's manifest with it once and drops
it. The certificate's row, its ``certificate.issued`` event and the
``report.generated`` event naming the manifest's SHA-256 are written in one
transaction that ends with a witnessed checkpoint, so a pack's existence and its
exact content are part of the log it reports on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab import audit, pki
from keyfab.authority.service import Authority, labelled

REPORT_EVENT = "report.generated"


@dataclass(frozen=True)
class ReportSigner:
    """A pack's signing key and its certificate chain (signer, the CA that certified it)."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]


def certify_report(
    authority: Authority, product: str, batches: Sequence[str], manifest_sha256: str
) -> ReportSigner:
    """Certify a one-time key for the pack whose manifest hashes to ``manifest_sha256``.

    Returns only once the certificate, the report event and the checkpoint
    have committed: a pack that verifies is one the log knows about.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    number, label = labelled(str(pki.Profile.REPORT_SIGNER))
    details = {
        "serial_number": pki.serial_hex(number),
        "batches": list(batches),
        "manifest_sha256": manifest_sha256,
    }
    certificate = authority.issue(
        pki.report_signer(authority.organization, product),
        key.public_key(),
        key_label=label,
        events=[audit.Entry(REPORT_EVENT, product, details)],
        serial_number=number,
        witnessed=True,
    )
    return ReportSigner(key, certificate, (authority.certificate,))
