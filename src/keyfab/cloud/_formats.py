"""AWS IoT bulk registration and Azure DPS enrollments for registry devices.

Formats, from the public documentation of each service:

AWS IoT bulk registration (``StartThingRegistrationTask``) takes a provisioning
template and a newline-delimited JSON file in S3, one line of template
parameters per device. keyfab writes a template whose thing is named by the
parameter ``ThingName`` and whose ``AWS::IoT::Certificate`` registers the
device certificate (``CertificatePem``) either with its issuing CA
(``CACertificatePem``, mode DEFAULT: the CA must be registered with AWS IoT) or
without one (``CertificateMode`` SNI_ONLY: multi-account registration).

Azure IoT Hub DPS takes an enrollment group whose X.509 attestation names the
signing (CA) certificate, and individual enrollments whose attestation carries
the device's client certificate. For X.509 the registration ID is the device
certificate's subject CN, so each device must have a CN that is a valid and
unique registration ID (alphanumerics and ``-._:``, at most 128 characters,
ending alphanumeric or ``-``; case-insensitive, written lowercase).

Everything streams: one device in memory at a time; devices that cannot be
exported are reported with the reason and skipped.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from keyfab.registry import Certificate, Device, DeviceState, Registry, queries

EXPORTED_STATES = (DeviceState.PROVISIONED.value, DeviceState.PRE_PROVISIONED.value)
_REGISTRATION_ID = re.compile(r"[A-Za-z0-9._:-]{0,127}[A-Za-z0-9-]")
_THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")


@dataclass(frozen=True)
class CloudDevice:
    """What a cloud needs of one device: names, its certificate and its issuer."""

    serial: str
    certificate: x509.Certificate
    issuer: x509.Certificate | None


Skipped = Callable[[str, str], None]
"""Told (device serial, reason) for every device that is left out."""


def cloud_devices(
    registry: Registry, batch: str | None, excluded: Skipped = lambda serial, reason: None
) -> Iterator[CloudDevice]:
    """Provisioned and pre-provisioned devices with their identity certificate.

    Every other device is told to ``excluded`` with why (revoked, failed, not
    provisioned, certificate revoked): a cloud must never get a revoked
    identity, and an operator must see which devices were left out on purpose.
    Streamed from the registry: one device in memory at a time.
    """
    issuers = {
        c.subject: c
        for c in (
            x509.load_der_x509_certificate(row.certificate)
            for row in queries.authorities(registry).values()
        )
    }
    for device, cert_row in queries.devices_with_identity(registry, batch):
        reason = _exclusion(device, cert_row)
        if reason is not None:
            excluded(device.serial, reason)
            continue
        assert cert_row is not None  # _exclusion refuses a device without one
        cert = x509.load_der_x509_certificate(cert_row.der)
        yield CloudDevice(device.serial, cert, issuers.get(cert.issuer) or _vendor_issuer(device))


def _exclusion(device: Device, identity: Certificate | None) -> str | None:
    """Why a device is not exported, or None if it is."""
    if device.state == DeviceState.FAILED:
        return f"failed: {device.failure}" if device.failure else "failed"
    if device.state == DeviceState.REVOKED:
        return "revoked"
    if device.state not in EXPORTED_STATES:
        return f"not provisioned ({device.state})"
    if identity is None:
        return "no certificate recorded"
    if identity.revoked_at is not None:
        return "identity certificate revoked"
    return None


def _vendor_issuer(device: Device) -> x509.Certificate | None:
    """The issuer an imported manifest carried, kept in the device's evidence."""
    try:
        chain = json.loads(device.evidence or "{}")["manifest"]["x5c_issuers"]
        return x509.load_der_x509_certificate(base64.b64decode(chain[0]))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(Encoding.PEM).decode("ascii")


def aws_template(register_with_ca: bool, policy: str | None) -> dict[str, Any]:
    """The provisioning template for StartThingRegistrationTask."""
    parameters: dict[str, Any] = {
        "ThingName": {"Type": "String"},
        "SerialNumber": {"Type": "String"},
        "CertificatePem": {"Type": "String"},
    }
    certificate: dict[str, Any] = {"CertificatePem": {"Ref": "CertificatePem"}, "Status": "ACTIVE"}
    if register_with_ca:
        parameters["CACertificatePem"] = {"Type": "String"}
        certificate["CACertificatePem"] = {"Ref": "CACertificatePem"}
    else:
        certificate["CertificateMode"] = "SNI_ONLY"
    resources: dict[str, Any] = {
        "thing": {
            "Type": "AWS::IoT::Thing",
            "Properties": {
                "ThingName": {"Ref": "ThingName"},
                "AttributePayload": {"serialNumber": {"Ref": "SerialNumber"}},
            },
        },
        "certificate": {"Type": "AWS::IoT::Certificate", "Properties": certificate},
    }
    if policy is not None:
        resources["policy"] = {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy}}
    return {"Parameters": parameters, "Resources": resources}


class _Seen:
    """Names already used in this export, on disk so memory stays flat."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        self._db.execute("CREATE TABLE seen (name TEXT PRIMARY KEY)")

    def add(self, name: str) -> bool:
        """False if ``name`` was already used."""
        try:
            self._db.execute("INSERT INTO seen VALUES (?)", (name,))
        except sqlite3.IntegrityError:
            return False
        return True

    def close(self) -> None:
        self._db.close()


def write_aws(
    devices: Iterable[CloudDevice],
    out: Path,
    register_with_ca: bool,
    policy: str | None,
    skipped: Skipped,
) -> int:
    """``provisioning-template.json``, ``bulk-registration.jsonl``, ``ca-certificates.pem``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "provisioning-template.json").write_text(
        json.dumps(aws_template(register_with_ca, policy), indent=2) + "\n"
    )
    issuers: dict[bytes, str] = {}
    count = 0
    with (out / "bulk-registration.jsonl").open("w") as lines:
        for device in devices:
            if not _THING_NAME.fullmatch(device.serial):
                skipped(device.serial, "serial is not a valid AWS IoT thing name")
                continue
            line = {
                "ThingName": device.serial,
                "SerialNumber": device.serial,
                "CertificatePem": _pem(device.certificate),
            }
            if register_with_ca:
                if device.issuer is None:
                    skipped(device.serial, "issuing CA certificate is unknown")
                    continue
                line["CACertificatePem"] = _pem(device.issuer)
                issuers.setdefault(
                    device.issuer.public_bytes(Encoding.DER), line["CACertificatePem"]
                )
            lines.write(json.dumps(line) + "\n")
            count += 1
    (out / "ca-certificates.pem").write_text("".join(issuers.values()))
    return count


def registration_id(certificate: x509.Certificate) -> str | None:
    """The DPS registration ID an X.509 device presents (its CN), if it is valid."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    name = str(names[0].value)
    return name.lower() if _REGISTRATION_ID.fullmatch(name) else None


def azure_group(group_id: str, ca: x509.Certificate) -> dict[str, Any]:
    """An enrollment group whose devices prove themselves with certificates from ``ca``."""
    return {
        "enrollmentGroupId": group_id,
        "attestation": {
            "type": "x509",
            "x509": {"signingCertificates": {"primary": {"certificate": _pem(ca)}}},
        },
        "provisioningStatus": "enabled",
    }


def azure_enrollment(registration: str, device: CloudDevice) -> dict[str, Any]:
    """An individual enrollment for one device certificate."""
    return {
        "registrationId": registration,
        "deviceId": device.serial,
        "attestation": {
            "type": "x509",
            "x509": {"clientCertificates": {"primary": {"certificate": _pem(device.certificate)}}},
        },
        "provisioningStatus": "enabled",
    }


def write_azure(
    devices: Iterable[CloudDevice],
    out: Path,
    group_id: str,
    group_ca: x509.Certificate,
    skipped: Skipped,
) -> int:
    """``enrollment-group.json`` and ``individual-enrollments.jsonl`` (one per line)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "enrollment-group.json").write_text(
        json.dumps(azure_group(group_id, group_ca), indent=2) + "\n"
    )
    seen = _Seen()
    count = 0
    try:
        with (out / "individual-enrollments.jsonl").open("w") as lines:
            for device in devices:
                registration = registration_id(device.certificate)
                if registration is None:
                    skipped(device.serial, "certificate CN is not a valid DPS registration ID")
                elif not seen.add(registration):
                    skipped(
                        device.serial, f"registration ID {registration!r} (the CN) is not unique"
                    )
                else:
                    lines.write(json.dumps(azure_enrollment(registration, device)) + "\n")
                    count += 1
    finally:
        seen.close()
    return count
