"""The CMP responder's key and certificate, and the responder built from them.

Like the TLS files (``server.tls``), the key is a 0600 file in the workspace
home (``cmp/``), made and certified by the workspace's CA through
``authority.credentials`` (so recorded and audited), and re-issued when its
certificate nears expiry. ``keyfab serve`` prepares it once, before its
workers start, so two workers never race to issue it.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from keyfab.authority import Authority, issue_cmp_responder
from keyfab.clock import utc_now
from keyfab.cmp.responder import Responder
from keyfab.cmp.state import folder, mac_key
from keyfab.errors import ConfigError
from keyfab.securefile import read_bounded, write_secret
from keyfab.workspace import Workspace

_RENEW_BEFORE = datetime.timedelta(days=14)
_KEY, _CERTIFICATE = "responder-key.pem", "responder-cert.pem"


def _fresh(path: Path, authority: Authority) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(read_bounded(path, 16384, "certificate"))
    except (OSError, ValueError, ConfigError):
        return False
    issuer_ok = certificate.issuer == authority.certificate.subject
    return issuer_ok and certificate.not_valid_after_utc - utc_now() > _RENEW_BEFORE


def prepare(workspace: Workspace, authority: Authority) -> None:
    """Make the MAC key and (re-)issue the responder certificate when needed."""
    home = folder(workspace.home)
    mac_key(home)
    if (home / _KEY).is_file() and _fresh(home / _CERTIFICATE, authority):
        return
    credential = issue_cmp_responder(authority)
    write_secret(home / _KEY, credential.key_pem, replace=True)
    write_secret(
        home / _CERTIFICATE, credential.certificate.public_bytes(Encoding.PEM), replace=True
    )


def responder(workspace: Workspace, authority: Authority) -> Responder:
    """The responder of a prepared workspace (``prepare`` first)."""
    home = folder(workspace.home)
    try:
        key = load_pem_private_key(read_bounded(home / _KEY, 16384, "CMP responder key"), None)
        pem = read_bounded(home / _CERTIFICATE, 16384, "CMP responder certificate")
    except (OSError, ValueError) as error:
        raise ConfigError(f"the CMP responder is not prepared: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CMP responder key must be an EC key")
    return Responder(authority, key, x509.load_pem_x509_certificate(pem), mac_key(home))
