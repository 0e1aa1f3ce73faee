"""The registry: devices, public keys, certificates, batches and events."""

from keyfab.registry.db import Registry
from keyfab.registry.models import (
    ApiToken,
    AttestationNonce,
    AttestationPolicy,
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
    Release,
)
from keyfab.registry.rows import certificate_row

__all__ = [
    "ApiToken",
    "AttestationNonce",
    "AttestationPolicy",
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
    "Release",
    "certificate_row",
]
