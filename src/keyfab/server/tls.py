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
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyfab import pki
from keyfab.authority import Authority, issue_tls_server
from keyfab.clock import utc_now
from keyfab.errors import ConfigError
from keyfab.securefile import write_secret
from keyfab.workspace import Workspace

_RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path  # server certificate followed by the manufacturing CA
    key: Path
    trust: Path  # the CA chain client certificates must lead to


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
    with Authority.open(workspace) as authority:
        files.trust.write_bytes(
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in authority.chain)
        )
        if not (files.key.is_file() and _current(files.certificate, hosts)):
            _issue(authority, hosts, files)
    return files


def _issue(authority: Authority, hosts: tuple[str, ...], files: TlsFiles) -> None:
    """A new key and certificate for the service, recorded like every other certificate."""
    credential = issue_tls_server(authority, hosts)
    try:
        write_secret(files.key, credential.key_pem, replace=True)
    except OSError as error:
        raise ConfigError(f"cannot write {files.key}: {error.strerror}") from None
    files.certificate.write_bytes(
        credential.certificate.public_bytes(serialization.Encoding.PEM)
        + authority.certificate.public_bytes(serialization.Encoding.PEM)
    )
