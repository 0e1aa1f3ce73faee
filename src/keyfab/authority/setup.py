"""Creating a workspace's CAs: the root, the manufacturing CA below it, their records.

The keys are generated where their URIs point (soft files by default, an HSM
with ``pkcs11:``); the certificates and the URIs, never a PIN, go into the
registry with one ``ca.created`` audit event each.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority.service import fingerprint
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, KeyfabError
from keyfab.registry import CaRecord, Registry, queries
from keyfab.rot import KeyAlgorithm, KeySpec, open_rot, parse_key_uri, soft_key_uri
from keyfab.workspace import MANUFACTURING, ROOT, Workspace


def initialise(
    workspace: Workspace,
    organization: str,
    algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
    root_key: str | None = None,
    ca_key: str | None = None,
) -> pki.CertificateAuthority:
    """Create the root and manufacturing CAs, their keys and the registry."""
    workspace.make_home()
    registry = Registry.open(workspace.database_url, create=True)
    try:
        if queries.authorities(registry):
            raise ConfigError(f"{workspace.home} is already initialised")
        root_uri = root_key or soft_key_uri(workspace.home / "ca" / "root-ca.pem")
        ca_uri = ca_key or soft_key_uri(workspace.home / "ca" / "manufacturing-ca.pem")
        created: list[Path] = []
        try:
            root, manufacturing = _create_cas(
                organization, KeySpec(algorithm), root_uri, ca_uri, created
            )
        except KeyfabError:
            for path in created:  # a failed init leaves no soft key behind to block the next
                path.unlink(missing_ok=True)
            raise
        with registry.transaction() as session:
            for label, ca, uri in ((ROOT, root, root_uri), (MANUFACTURING, manufacturing, ca_uri)):
                _record(session, label, ca, uri)
        return manufacturing
    finally:
        registry.dispose()


def _record(session: Session, label: str, ca: pki.CertificateAuthority, uri: str) -> None:
    der = ca.certificate.public_bytes(Encoding.DER)
    session.add(CaRecord(name=label, certificate=der, key_uri=uri, created_at=utc_now()))
    audit.append(
        session,
        "ca.created",
        label,
        {
            "subject": ca.certificate.subject.rfc4514_string(),
            "serial_number": pki.serial_hex(ca.certificate),
            "sha256": fingerprint(ca.certificate),
            "key_uri": str(parse_key_uri(uri)),
        },
    )


def _create_cas(
    organization: str, spec: KeySpec, root_uri: str, ca_uri: str, created: list[Path]
) -> tuple[pki.CertificateAuthority, pki.CertificateAuthority]:
    name = organization or "keyfab"
    root = pki.CertificateAuthority.create_root(
        pki.root_ca(organization, f"{name} Root CA"), _new_key(root_uri, spec, created)
    )
    manufacturing = root.create_subordinate(
        pki.manufacturing_ca(organization, f"{name} Manufacturing CA"),
        _new_key(ca_uri, spec, created),
    )
    return root, manufacturing


def _new_key(uri: str, spec: KeySpec, created: list[Path]) -> pki.ca.CAKey:
    """Generate a CA key where ``uri`` says; soft key files made are added to ``created``."""
    parsed = parse_key_uri(uri)
    if parsed.label is None:
        raise ConfigError(f"key URI {parsed} does not name a key")
    if "pin-value" in parsed.query:
        raise ConfigError(
            "CA key URIs are kept in the registry: give the PIN by pin-source=file:..."
        )
    try:
        key = open_rot(parsed).generate_key(parsed.label, spec)
    except KeyfabError as error:
        raise ConfigError(f"cannot create CA key {parsed}: {error}") from None
    if parsed.scheme == "soft":
        created.append(Path(parsed.path))
    return key
