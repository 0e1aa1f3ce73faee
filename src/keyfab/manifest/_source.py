"""Reading keyfab-provisioned devices out of the registry as manifest payloads.

Devices are streamed in id order (``registry.queries.device_certificates``) so
exporting a batch of any size holds a few hundred rows at a time. Only devices
in state ``provisioned`` go into a manifest: a pending or failed slot has no identity to vouch for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from keyfab import audit
from keyfab.errors import ConfigError
from keyfab.manifest._export import EntrySigner, device_element, write_manifest
from keyfab.manifest._model import Organization, SecureElement
from keyfab.registry import Certificate, Device, DeviceState, Registry, queries

_HEX_ID = re.compile(r"(?:[0-9a-f]{2}){1,32}")


@dataclass(frozen=True)
class ExportDescription:
    """What the manifest says about the parts: model, part number, who provisioned."""

    provisioner: Organization
    model: str | None = None
    """Defaults to the batch's product name, as does ``part_number``."""
    part_number: str | None = None
    group_id: str | None = None


def batch_elements(
    registry: Registry, batch: str, description: ExportDescription
) -> Iterator[SecureElement]:
    """One payload per provisioned device of ``batch``, in provisioning order."""
    progress = queries.batch_summary(registry, batch)
    issuers = {
        cert.subject: cert
        for cert in (
            x509.load_der_x509_certificate(row.certificate)
            for row in queries.authorities(registry).values()
        )
    }
    description = dataclasses.replace(
        description,
        model=description.model or progress.batch.product,
        part_number=description.part_number or progress.batch.product,
    )
    rows = queries.device_certificates(registry, batch, [DeviceState.PROVISIONED.value])
    for _, group in itertools.groupby(rows, key=lambda row: row[0].id):
        certificates = list(group)
        yield _element(certificates[0][0], [row[1] for row in certificates], issuers, description)


def _element(
    device: Device,
    certificates: list[Certificate],
    issuers: dict[x509.Name, x509.Certificate],
    description: ExportDescription,
) -> SecureElement:
    unique_id = device.unique_id or ""
    if not _HEX_ID.fullmatch(unique_id):
        raise ConfigError(
            f"device {device.serial}: unique id {unique_id!r} is not lowercase "
            "hex, which the manifest format requires"
        )
    keys = []
    for row in certificates:
        cert = x509.load_der_x509_certificate(row.der)
        issuer = issuers.get(cert.issuer)
        keys.append((row.key_label, [cert] if issuer is None else [cert, issuer]))
    moment = device.provisioned_at or device.created_at
    return device_element(
        unique_id,
        keys,
        moment,
        description.model or "",
        description.part_number or "",
        description.provisioner,
        description.group_id,
    )


def export_batch(
    registry: Registry, batch: str, description: ExportDescription, signer: EntrySigner, out: Path
) -> int:
    """Write ``batch``'s manifest to ``out``; returns the number of entries.

    The file appears under its name only when complete (written beside it, then
    renamed), and the export is recorded in the audit log with its SHA-256.
    """
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("wb") as stream:
            count = write_manifest(batch_elements(registry, batch, description), signer, stream)
        with partial.open("rb") as written:
            digest = hashlib.file_digest(written, "sha256").hexdigest()
        os.replace(partial, out)
    except OSError as error:
        raise ConfigError(f"cannot write {out}: {error.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    with registry.transaction() as session:
        audit.append(
            session,
            "manifest.exported",
            batch,
            {
                "entries": count,
                "file": out.name,
                "sha256": digest,
                "signer_x5t": signer.thumbprint_b64,
            },
        )
    return count
