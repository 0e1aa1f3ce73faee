"""Registry rows to API models: one place decides what a client sees."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from keyfab.clock import utc_now
from keyfab.pki.display import readable_subject
from keyfab.registry import Certificate, Device, DeviceState
from keyfab.server.models import CertificateInfo, CertificateSummary, DeviceSummary


def certificate_summary(row: Certificate) -> CertificateSummary:
    return CertificateSummary(
        serial_number=row.serial_number,
        key=row.key_label,
        profile=row.profile,
        subject=readable_subject(row.der),  # rows stored before 0004 kept OIDs
        not_before=row.not_before,
        not_after=row.not_after,
        revoked_at=row.revoked_at,
        revocation_reason=row.revocation_reason,
        status=row.status(utc_now()),
    )


def certificate_info(row: Certificate, device: str | None) -> CertificateInfo:
    fingerprint = x509.load_der_x509_certificate(row.der).fingerprint(hashes.SHA256()).hex()
    return CertificateInfo(
        **certificate_summary(row).model_dump(),
        device=device,
        issued_at=row.issued_at,
        sha256=fingerprint,
    )


def device_summary(row: Device, batch: str | None) -> DeviceSummary:
    return DeviceSummary(
        serial=row.serial,
        state=DeviceState(row.state),
        batch=batch,
        slot=row.slot,
        rot=row.rot_kind,
        unique_id=row.unique_id,
        created_at=row.created_at,
        provisioned_at=row.provisioned_at,
        failure=row.failure,
    )
