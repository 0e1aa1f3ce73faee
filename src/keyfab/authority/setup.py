"""Creating a workspace's CAs: the root, the manufacturing CA below it, their records.

The keys are generated where their URIs point (soft files by default, an HSM
with ``pkcs11:``), or adopted there when asked (``adopt``: the key must exist,
as ``step ca init --kms`` uses existing keys); without ``adopt`` an existing key
is refused, so a typo in a URI cannot silently reuse another CA's key. Relative
paths in the URIs are made absolute first, so the recorded URIs work from any
directory. The certificates and the URIs, never a PIN, go into the registry
with one ``ca.created`` audit event each.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority.service import fingerprint
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, KeyfabError, KeyNotFoundError
from keyfab.registry import CaKind, CaRecord, Registry, queries
from keyfab.rot import KeyAlgorithm, KeySpec, open_rot, parse_key_uri, soft_key_uri
from keyfab.rot.base import RootOfTrust
from keyfab.rot.uri import KeyUri, absolute_key_uri
from keyfab.workspace import MANUFACTURING, ROOT, Workspace

MAX_ORGANIZATION = 64 - len(" Manufacturing CA")
"""The CA common names are "<org> Root CA" and "<org> Manufacturing CA", and an
X.520 commonName holds 64 characters: a longer organisation cannot name the CAs."""


def initialise(
    workspace: Workspace,
    organization: str,
    algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
    root_key: str | None = None,
    ca_key: str | None = None,
    adopt: bool = False,
) -> pki.CertificateAuthority:
    """Create the root and manufacturing CAs, their keys and the registry.

    With ``adopt`` the keys at the URIs given (``root_key``, ``ca_key``) are
    used instead of generated; the default soft files are always generated.
    A failed init leaves nothing it made behind (see ``_undone_on_failure``).
    """
    if len(organization) > MAX_ORGANIZATION or not organization.isprintable():
        raise ConfigError(f"--org must be at most {MAX_ORGANIZATION} printable characters")
    with _undone_on_failure(workspace):
        workspace.make_home()
        registry = Registry.open(workspace.database_url, create=True)
        try:
            return _initialise(
                registry, workspace, organization, algorithm, (root_key, ca_key), adopt
            )
        finally:
            registry.dispose()


def _initialise(
    registry: Registry,
    workspace: Workspace,
    organization: str,
    algorithm: KeyAlgorithm,
    given: tuple[str | None, str | None],
    adopt: bool,
) -> pki.CertificateAuthority:
    if queries.authorities(registry):
        raise ConfigError(f"{workspace.home} is already initialised")
    root_uri = key_uri_or(given[0], workspace.home / "ca" / "root-ca.pem")
    ca_uri = key_uri_or(given[1], workspace.home / "ca" / "manufacturing-ca.pem")
    spec, created = KeySpec(algorithm), list[Path]()
    try:
        root_ca_key = new_ca_key(root_uri, spec, created, adopt=adopt and bool(given[0]))
        manufacturing_key = new_ca_key(ca_uri, spec, created, adopt=adopt and bool(given[1]))
        root, manufacturing = _create_cas(organization, root_ca_key, manufacturing_key)
    except KeyfabError:
        for path in created:  # a failed init leaves no soft key behind to block the next
            path.unlink(missing_ok=True)
        raise
    with registry.transaction() as session:
        record_ca(session, ROOT, CaKind.ROOT, root, root_uri)
        record_ca(session, MANUFACTURING, CaKind.MANUFACTURING, manufacturing, ca_uri)
    return manufacturing


@contextmanager
def _undone_on_failure(space: Workspace) -> Iterator[None]:
    """A failed init leaves nothing: no registry file, and no home if init made it.

    A left-over ``keyfab.db`` would make the workspace look initialised (or
    half so) to the next command; only what this init created is removed.
    """
    home_existed = space.home.exists()
    database = space.home / "keyfab.db"
    database_existed = not space.uses_default_database or database.exists()
    try:
        yield
    except BaseException:
        if not home_existed:
            shutil.rmtree(space.home, ignore_errors=True)
        elif not database_existed:
            for suffix in ("", "-wal", "-shm", "-journal"):
                database.with_name(database.name + suffix).unlink(missing_ok=True)
        raise


def record_ca(
    session: Session, name: str, kind: CaKind, ca: pki.CertificateAuthority, uri: str
) -> None:
    """The CA's row and its ``ca.created`` event (rotation records its new CAs here too)."""
    der = ca.certificate.public_bytes(Encoding.DER)
    session.add(CaRecord(name=name, kind=kind, certificate=der, key_uri=uri, created_at=utc_now()))
    audit.append(
        session,
        "ca.created",
        name,
        {
            "kind": str(kind),
            "subject": ca.certificate.subject.rfc4514_string(),
            "serial_number": pki.serial_hex(ca.certificate),
            "sha256": fingerprint(ca.certificate),
            "key_uri": str(parse_key_uri(uri)),
        },
    )


def key_uri_or(given: str | None, default: Path) -> str:
    """The key URI to record: the one given with absolute paths, or the default soft file."""
    return absolute_key_uri(given) if given else soft_key_uri(default.absolute())


def _create_cas(
    organization: str, root_key: pki.ca.CAKey, ca_key: pki.ca.CAKey
) -> tuple[pki.CertificateAuthority, pki.CertificateAuthority]:
    name = organization or "keyfab"
    root = pki.CertificateAuthority.create_root(
        pki.root_ca(organization, f"{name} Root CA"), root_key
    )
    manufacturing = root.create_subordinate(
        pki.manufacturing_ca(organization, f"{name} Manufacturing CA"), ca_key
    )
    return root, manufacturing


def _existing(rot: RootOfTrust, label: str) -> pki.ca.CAKey | None:
    """The key under ``label`` if there is one (opened, never generated)."""
    try:
        return rot.key(label)
    except KeyNotFoundError:
        return None


def new_ca_key(uri: str, spec: KeySpec, created: list[Path], *, adopt: bool) -> pki.ca.CAKey:
    """The CA key at ``uri``: adopted if ``adopt`` (it must exist), else generated
    (it must not exist); soft key files made are added to ``created``."""
    parsed = parse_key_uri(uri)
    if parsed.label is None:
        raise ConfigError(f"key URI {parsed} does not name a key")
    if "pin-value" in parsed.query:
        raise ConfigError(
            "CA key URIs are kept in the registry: give the PIN by pin-source=file:..."
        )
    try:
        rot = open_rot(parsed)
        existing = _existing(rot, parsed.label)
        if adopt or existing is not None:
            return _adopted(parsed, existing, adopt)
        key = rot.generate_key(parsed.label, spec)
    except ConfigError:
        raise
    except KeyfabError as error:
        raise ConfigError(f"cannot create CA key {parsed}: {error}") from None
    if parsed.scheme == "soft":
        created.append(Path(parsed.path))
    return key


def _adopted(parsed: KeyUri, existing: pki.ca.CAKey | None, adopt: bool) -> pki.ca.CAKey:
    """The existing key when adopting was asked for; otherwise a one-line refusal."""
    if not adopt:
        raise ConfigError(f"a key already exists at {parsed}: use it with --adopt-keys")
    if existing is None:
        raise ConfigError(f"--adopt-keys: no key at {parsed} to adopt")
    return existing
