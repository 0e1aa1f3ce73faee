"""Rows built from domain objects, so every writer stores them the same way."""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.pki.ca import serial_hex
from keyfab.pki.display import readable_name

_SUBJECT_MAX = 512  # the certificates.subject column
_LABEL_MAX = 64  # the certificates.key_label column


def certificate_row(
    certificate: x509.Certificate,
    *,
    device_id: int | None,
    key_label: str,
    profile: str,
    issued_at: datetime.datetime,
    issuer: str | None = None,
    subject: x509.Name | None = None,
) -> dict[str, Any]:
    """The ``certificates`` row for ``certificate`` (serial number as lowercase hex).

    ``issuer`` names the workspace CA that signed it; None for a certificate
    from elsewhere (a vendor's), which no CRL of the workspace lists.
    ``subject``: the name the certificate was signed with, if the caller has it
    (parsing it back out of the certificate builds a Python object per attribute).
    """
    return {
        "serial_number": serial_hex(certificate),
        "device_id": device_id,
        "key_label": key_label[:_LABEL_MAX],
        "profile": profile,
        "subject": readable_name(subject or certificate.subject)[:_SUBJECT_MAX],
        "not_before": certificate.not_valid_before_utc,
        "not_after": certificate.not_valid_after_utc,
        "der": certificate.public_bytes(Encoding.DER),
        "issued_at": issued_at,
        "issuer": issuer,
    }
