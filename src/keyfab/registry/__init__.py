"""The registry: devices, public keys, certificates, batches and events."""

from keyfab.registry.db import Registry
from keyfab.registry.models import (
    ApiToken,
    AttestationNonce,
    AttestationResult,
    AttestationState,
    AuditEvent,
    AuditHead,
    Base,
    Batch,
    CaKind,
    CaRecord,
    Certificate,
    CertificateStatus,
    CmpSecret,
    CmpTransaction,
    CrlRecord,
    Device,
    DeviceState,
)
from keyfab.registry.rows import certificate_row

__all__ = [
    "ApiToken",
    "AttestationNonce",
    "AttestationResult",
    "AttestationState",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Batch",
    "CaKind",
    "CaRecord",
    "Certificate",
    "CertificateStatus",
    "CmpSecret",
    "CmpTransaction",
    "CrlRecord",
    "Device",
    "DeviceState",
    "Registry",
    "certificate_row",
]
