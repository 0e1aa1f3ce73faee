"""Station identities: TLS client certificates that give a factory station operator rights.

A station proves itself in the TLS handshake instead of holding a bearer token:
its key is made here and handed over once (a file, 0600), and the certificate
is recorded like every other one, so revoking it in the registry locks the
station out at its next request (``revocation.revoke_station``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab import audit, pki
from keyfab.authority.revocation import station_label
from keyfab.authority.service import Authority, labelled
from keyfab.errors import ConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


@dataclass(frozen=True)
class StationIdentity:
    certificate: x509.Certificate
    key_pem: bytes  # the only copy: write it 0600 and hand it to the station


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError("station name must be 1-48 letters, digits, '.', '_' or '-'")
    return name


def issue_station(authority: Authority, name: str) -> StationIdentity:
    """A new station certificate and key, recorded with its audit events."""
    key = ec.generate_private_key(ec.SECP256R1())
    template = pki.station(authority.organization, check_name(name))
    number, label = labelled(station_label(name)[:-1])
    event = audit.Entry("station.certified", name, {"serial_number": f"{number:x}"})
    certificate = authority.issue(
        template, key.public_key(), key_label=label, events=[event], serial_number=number
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return StationIdentity(certificate, key_pem)
