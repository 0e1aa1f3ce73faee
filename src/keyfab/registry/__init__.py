"""The registry: devices, public keys, certificates, batches and events."""

from keyfab.registry.db import Registry
from keyfab.registry.models import (
    AuditEvent,
    AuditHead,
    Authority,
    Base,
    Batch,
    Certificate,
    Device,
    DeviceState,
)

__all__ = [
    "AuditEvent",
    "AuditHead",
    "Authority",
    "Base",
    "Batch",
    "Certificate",
    "Device",
    "DeviceState",
    "Registry",
]
