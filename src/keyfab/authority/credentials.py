"""Credentials keyfab issues to its own parties: stations, the service, manifest signers.

The service has two: its TLS server certificate and its CMP responder certificate.

Each is signed and recorded like every other certificate (a registry row and
its audit events, in one transaction), so it can be listed, revoked and put on
the CRL. Keys made here (stations, the service's TLS) are returned once as PEM
for the caller to write 0600; a manifest signer's key stays in its root of trust.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab import audit, pki
from keyfab.authority.revocation import station_label
from keyfab.authority.service import Authority, labelled
from keyfab.names import check_name
from keyfab.pki.ca import PublicKey


@dataclass(frozen=True)
class NewCredential:
    certificate: x509.Certificate
    key_pem: bytes  # the only copy: write it 0600 and hand it over


def _new_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key, pem


def check_station_name(name: str) -> str:
    return check_name("station", name)


def issue_station(authority: Authority, name: str) -> NewCredential:
    """A factory station's client certificate and key (operator rights over mutual TLS)."""
    key, pem = _new_key()
    template = pki.station(authority.organization, check_station_name(name))
    number, label = labelled(station_label(name)[:-1])
    event = audit.Entry("station.certified", name, {"serial_number": pki.serial_hex(number)})
    certificate = authority.issue(
        template,
        key.public_key(),
        key_label=label,
        events=[event],
        serial_number=number,
        witnessed=True,  # a station certificate grants operator rights
    )
    return NewCredential(certificate, pem)


def issue_tls_server(authority: Authority, hosts: tuple[str, ...]) -> NewCredential:
    """The certificate and key ``keyfab serve`` presents for ``hosts``."""
    key, pem = _new_key()
    number, label = labelled(str(pki.Profile.TLS_SERVER))
    template = pki.tls_server(authority.organization, hosts)
    certificate = authority.issue(template, key.public_key(), key_label=label, serial_number=number)
    return NewCredential(certificate, pem)


def issue_cmp_responder(authority: Authority) -> NewCredential:
    """The certificate and key ``keyfab serve`` signs CMP responses with (RFC 9483 §3.1)."""
    key, pem = _new_key()
    number, label = labelled(str(pki.Profile.CMP_RESPONDER))
    template = pki.cmp_responder(authority.organization)
    certificate = authority.issue(template, key.public_key(), key_label=label, serial_number=number)
    return NewCredential(certificate, pem)


def issue_manifest_signer(
    authority: Authority, public_key: PublicKey, name: str, key_uri: str
) -> x509.Certificate:
    """A manifest-signer certificate for a key already in its root of trust."""
    number, label = labelled(str(pki.Profile.MANIFEST_SIGNER))
    details = {"serial_number": pki.serial_hex(number), "key_uri": key_uri}
    return authority.issue(
        pki.manifest_signer(authority.organization or "keyfab", name),
        public_key,
        key_label=label,
        events=[audit.Entry("manifest.signer_issued", name, details)],
        serial_number=number,
    )


def issue_ocsp_signer(authority: Authority, ca_name: str) -> NewCredential:
    """A delegated OCSP signer for CA ``ca_name`` and its new key (7 days, see ``pki.ocsp_signer``).

    Signed by that CA itself (RFC 6960 section 4.2.2.2), retired or not: a
    signer issued by any other key would be refused by every client.
    """
    key, pem = _new_key()
    number, label = labelled(f"{pki.Profile.OCSP_SIGNER}:{ca_name}")
    template = pki.ocsp_signer(authority.organization, ca_name)
    certificate = authority.issue(
        template, key.public_key(), key_label=label, serial_number=number, ca=ca_name
    )
    return NewCredential(certificate, pem)
