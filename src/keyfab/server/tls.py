"""The service's own TLS: a server certificate from keyfab's PKI, and mutual TLS.

``keyfab serve`` presents a certificate issued by the workspace's manufacturing
CA, so a device that trusts the keyfab root (it has it from provisioning)
trusts the service with no extra anchor. Its key is an ordinary file (0600),
because the TLS stack must read it; it is re-issued whenever it is missing,
names other hosts or has less than a week left. ``trust`` is the chain
client certificates must lead to: they are requested but optional, since
devices re-enrolling prove themselves with them and everyone else uses a token.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab import audit, pki
from keyfab._time import utc_now
from keyfab.registry import Certificate, certificate_row
from keyfab.workspace import Workspace

_RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path  # server certificate followed by the manufacturing CA
    key: Path
    trust: Path  # the CA chain client certificates must lead to


def _organization(ca: pki.CertificateAuthority) -> str:
    names = ca.certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return str(names[0].value) if names else ""


def _current(path: Path, hosts: tuple[str, ...]) -> bool:
    """True if the certificate at ``path`` is fresh and names exactly ``hosts``."""
    try:
        certificate = x509.load_pem_x509_certificates(path.read_bytes())[0]
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return False
    wanted = pki.tls_server("", hosts).extensions[-1][0]
    fresh = certificate.not_valid_after_utc - utc_now() > _RENEW_BEFORE
    return fresh and san.value == wanted


def server_files(workspace: Workspace, hosts: tuple[str, ...]) -> TlsFiles:
    """The service's TLS files, (re-)issuing the certificate when needed."""
    folder = workspace.home / "server"
    folder.mkdir(mode=0o700, exist_ok=True)
    files = TlsFiles(folder / "tls-cert.pem", folder / "tls-key.pem", folder / "trust.pem")
    ca = workspace.authority()
    files.trust.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ca.full_chain())
    )
    if not (files.key.is_file() and _current(files.certificate, hosts)):
        _issue(workspace, ca, hosts, files)
    return files


def _issue(
    workspace: Workspace, ca: pki.CertificateAuthority, hosts: tuple[str, ...], files: TlsFiles
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = ca.issue(pki.tls_server(_organization(ca), hosts), key.public_key())
    _write_secret(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    files.certificate.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + ca.certificate.public_bytes(serialization.Encoding.PEM)
    )
    _record(workspace, certificate)


def _write_secret(path: Path, data: bytes) -> None:
    """Write a key file readable by its owner only, replacing any old one atomically."""
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def _record(workspace: Workspace, certificate: x509.Certificate) -> None:
    """Every certificate the CA signs is in the registry with its audit event."""
    registry = workspace.registry()
    now = utc_now()
    serial_number = format(certificate.serial_number, "x")
    try:
        with registry.transaction() as session:
            row = certificate_row(
                certificate,
                device_id=None,
                key_label=f"tls-server:{serial_number[:16]}",
                profile="tls-server",
                issued_at=now,
            )
            session.add(Certificate(**row))
            audit.append(
                session,
                "certificate.issued",
                certificate.subject.rfc4514_string(),
                {
                    "serial_number": serial_number,
                    "profile": "tls-server",
                    "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
                },
            )
    finally:
        registry.dispose()
