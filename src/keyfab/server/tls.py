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
import stat
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
PEM = serialization.Encoding.PEM


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
        # every CA still serving: devices issued before a rotation keep re-enrolling
        _write(files.trust, b"".join(c.public_bytes(PEM) for c in authority.published()))
        if not (_own_file(files.key) and _current(files.certificate, hosts)):
            _issue(authority, hosts, files)
    return files


def _own_file(path: Path) -> bool:
    """True if ``path`` itself is a regular file: a symlink there is never our key."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _write(path: Path, data: bytes) -> None:
    """Replace one of the service's files the way secrets are written.

    The certificate and trust files are public, but writing them with
    ``write_bytes`` would follow a symlink planted in their place and
    overwrite whatever it points to; ``write_secret`` checks the directory
    and swaps the name atomically instead.
    """
    try:
        write_secret(path, data, replace=True)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from None


def _issue(authority: Authority, hosts: tuple[str, ...], files: TlsFiles) -> None:
    """A new key and certificate for the service, recorded like every other certificate."""
    credential = issue_tls_server(authority, hosts)
    _write(files.key, credential.key_pem)
    _write(
        files.certificate,
        credential.certificate.public_bytes(PEM) + authority.certificate.public_bytes(PEM),
    )
