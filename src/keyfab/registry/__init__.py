"""The registry: devices, public keys, certificates, batches and events."""

from keyfab.registry.db import Registry
from keyfab.registry.models import (
    ApiToken,
    AuditEvent,
    AuditHead,
    Base,
    Batch,
    CaRecord,
    Certificate,
    CrlRecord,
    Device,
    DeviceState,
    Setting,
)
from keyfab.registry.rows import certificate_row

__all__ = [
    "ApiToken",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Batch",
    "CaRecord",
    "Certificate",
    "CrlRecord",
    "Device",
    "DeviceState",
    "Registry",
    "Setting",
    "certificate_row",
]
