"""A keyfab workspace: the home directory, its registry and its CAs.

``KEYFAB_HOME`` (or ``--home``) chooses the directory; ``KEYFAB_DATABASE_URL``
moves the registry off the default SQLite file. The CA certificates and the URIs
of their keys live in the registry, so every station sharing a database issues
from the same CA; the keys themselves stay in their roots of trust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from keyfab import audit, pki
from keyfab._time import utc_now
from keyfab.errors import ConfigError, KeyfabError
from keyfab.registry import Authority, Registry
from keyfab.rot import KeyAlgorithm, KeySpec, KeyUri, load_key, open_rot, parse_key_uri

ROOT, MANUFACTURING = "root", "manufacturing"


def default_home() -> Path:
    return Path(os.environ.get("KEYFAB_HOME") or Path.home() / ".keyfab")


@dataclass(frozen=True)
class Workspace:
    home: Path

    @property
    def database_url(self) -> str:
        return os.environ.get("KEYFAB_DATABASE_URL") or f"sqlite:///{self.home / 'keyfab.db'}"

    @property
    def uses_default_database(self) -> bool:
        return not os.environ.get("KEYFAB_DATABASE_URL")

    def registry(self) -> Registry:
        """The workspace's registry; it must have been made by ``keyfab init``."""
        if self.uses_default_database and not (self.home / "keyfab.db").is_file():
            raise ConfigError(
                f"{self.home} is not a keyfab workspace: run 'keyfab init --home {self.home}'"
            )
        return Registry.open(self.database_url)

    def make_home(self) -> None:
        """Create the home directory (0700), or say plainly why it cannot be used."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.home / ".keyfab-write-test"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise ConfigError(f"cannot use {self.home} as keyfab home: {error.strerror}") from None

    def authority(self) -> pki.CertificateAuthority:
        """The manufacturing CA, with its key opened in its root of trust."""
        registry = self.registry()
        try:
            with registry.reading() as session:
                rows = {a.name: a for a in session.scalars(select(Authority))}
        finally:
            registry.dispose()
        if MANUFACTURING not in rows or ROOT not in rows:
            raise ConfigError(f"no manufacturing CA in {self.home}: run 'keyfab init'")
        certificate = x509.load_der_x509_certificate(rows[MANUFACTURING].certificate)
        root = x509.load_der_x509_certificate(rows[ROOT].certificate)
        key = load_key(rows[MANUFACTURING].key_uri)
        return pki.CertificateAuthority(certificate, key, (root,))

    def authority_key_uri(self, name: str = MANUFACTURING) -> KeyUri:
        """Where a CA's key lives (``root`` or ``manufacturing``), as recorded."""
        registry = self.registry()
        try:
            with registry.transaction() as session:
                uri = session.scalar(select(Authority.key_uri).where(Authority.name == name))
        finally:
            registry.dispose()
        if uri is None:
            raise ConfigError(f"no {name} CA in {self.home}: run 'keyfab init'")
        return parse_key_uri(uri)

    def root_certificate(self) -> x509.Certificate:
        return self.authority().chain[-1]

    def initialise(
        self,
        organization: str,
        algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
        root_key: str | None = None,
        ca_key: str | None = None,
    ) -> pki.CertificateAuthority:
        """Create the root and manufacturing CAs, their keys and the registry."""
        self.make_home()
        registry = Registry.open(self.database_url, create=True)
        try:
            with registry.transaction() as session:
                if session.scalars(select(Authority)).first() is not None:
                    raise ConfigError(f"{self.home} is already initialised")
            root_uri = root_key or f"soft:{self.home / 'ca' / 'root-ca.pem'}"
            ca_uri = ca_key or f"soft:{self.home / 'ca' / 'manufacturing-ca.pem'}"
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
                for label, ca, uri in (
                    (ROOT, root, root_uri),
                    (MANUFACTURING, manufacturing, ca_uri),
                ):
                    der = ca.certificate.public_bytes(Encoding.DER)
                    session.add(
                        Authority(name=label, certificate=der, key_uri=uri, created_at=utc_now())
                    )
                    audit.append(
                        session,
                        "ca.created",
                        label,
                        {
                            "subject": ca.certificate.subject.rfc4514_string(),
                            "serial_number": format(ca.certificate.serial_number, "x"),
                            "sha256": ca.certificate.fingerprint(hashes.SHA256()).hex(),
                            "key_uri": str(parse_key_uri(uri)),
                        },
                    )
            return manufacturing
        finally:
            registry.dispose()


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
