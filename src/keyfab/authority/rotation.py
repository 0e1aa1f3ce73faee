"""Rotating the manufacturing CA, and rolling the root over (RFC 4210 section 4.4).

A rotation adds a manufacturing CA under the current root and makes it the
issuing one; the old CA is retired, which only means it issues no more: it
keeps signing the CRL of what it issued, so the fleet it signed stays
checkable until its certificates expire. Nothing is re-provisioned.

A root rollover also replaces the root's key. The new root keeps the old
root's name (the key changes, not who the root is) and the two roots
certify each other's keys: newWithOld lets a device that trusts only the old
root reach the new one, oldWithNew does the reverse. Being self-issued, those
links do not count against the roots' path length. A new manufacturing CA
under the new root then becomes the issuing CA.

New keys go where the old ones are (a soft file beside it, or the same
PKCS#11 token under a numbered label) unless a URI is given. Keys are made
and everything is signed before the transaction; the records, the audit
events and a checkpoint signed by the CA that issued until now (which the
auditors already trust) then commit together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority.service import Authority, Issued, fingerprint, record
from keyfab.authority.setup import new_ca_key, record_ca
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, ConflictError, KeyfabError
from keyfab.registry import CaKind, CaRecord, queries
from keyfab.rot import KeyAlgorithm, KeySpec
from keyfab.rot.uri import KeyUri, absolute_key_uri, parse_key_uri

_CN_MAX = 64  # an X.520 commonName


@dataclass(frozen=True)
class Rotation:
    """What a rotation made: the new issuing CA, the one it retired, a new root if any."""

    issuing: str
    retired: str
    root: str | None = None


@dataclass(frozen=True)
class _NewCa:
    name: str
    kind: CaKind
    ca: pki.CertificateAuthority
    key_uri: str


def rotate(
    authority: Authority,
    *,
    root: bool = False,
    ca_key: str | None = None,
    root_key: str | None = None,
    adopt: bool = False,
) -> Rotation:
    """Make a new issuing manufacturing CA (and with ``root``, a new root first).

    ``ca_key``/``root_key`` put the new keys at those URIs; ``adopt`` uses the
    keys already there instead of generating them. The old CAs are retired.
    """
    if root_key and not root:
        raise ConfigError("--root-key is for a root rollover: add --root")
    old, created = authority.issuing, list[Path]()
    try:
        parent, links, made = _parent(authority, root, root_key, adopt, created)
        manufacturing = _manufacturing(authority, parent.ca, ca_key, adopt, created)
        retired = [old, *([authority.issuer_of(old)] if made else [])]
        _commit(authority, [*([parent] if made else []), manufacturing], retired, links)
    except KeyfabError:
        for path in created:  # nothing of a failed rotation stays behind
            path.unlink(missing_ok=True)
        raise
    authority.refresh()
    return Rotation(manufacturing.name, old, parent.name if made else None)


def _commit(
    authority: Authority, new: list[_NewCa], retired: list[str], links: list[Issued]
) -> None:
    """Record the new CAs (the issuing one last), retire the old, in one transaction."""
    issuing = new[-1]
    with authority.transaction() as session:
        _check_unchanged(session, authority)
        _retire(session, retired)
        for ca in new:
            record_ca(session, ca.name, ca.kind, ca.ca, ca.key_uri)
        details = {
            "retired": retired,
            "issuing": issuing.name,
            "sha256": fingerprint(issuing.ca.certificate),
        }
        record(session, links, [audit.Entry("ca.rotated", issuing.name, details)])
        authority.checkpoint(session)  # signed by the CA that issued until now


def _parent(
    authority: Authority, root: bool, root_key: str | None, adopt: bool, created: list[Path]
) -> tuple[_NewCa, list[Issued], bool]:
    """The root the new manufacturing CA goes under, its link certificates, and
    whether it is new (a rollover) or the issuing CA's own root."""
    current = authority.issuer_of(authority.issuing)
    old = authority.open_ca(current)
    if not root:
        return _NewCa(current, CaKind.ROOT, old, authority.key_uri(current)), [], False
    first, name, uri = _placed(authority, CaKind.ROOT, root_key)
    key = _key(authority, uri, old.certificate, adopt, created)
    subject = old.certificate.subject  # a rollover changes the root's key, not its name
    template = dataclasses.replace(pki.root_ca("", _common_name(first)), subject=subject)
    new = pki.CertificateAuthority.create_root(template, key)
    return _NewCa(name, CaKind.ROOT, new, uri), _links(old, current, new, name), True


def _links(
    old: pki.CertificateAuthority, old_name: str, new: pki.CertificateAuthority, new_name: str
) -> list[Issued]:
    """newWithOld and oldWithNew, both ending with the old root (RFC 4210 section 4.4)."""
    until = old.certificate.not_valid_after_utc
    new_with_old = old.issue(pki.root_link(new.certificate.subject, until), new.key.public_key())
    old_with_new = new.issue(pki.root_link(old.certificate.subject, until), old.key.public_key())
    return [
        Issued(new_with_old, pki.Profile.ROOT_LINK, queries.link_label(new_name, old_name)),
        Issued(old_with_new, pki.Profile.ROOT_LINK, queries.link_label(old_name, new_name)),
    ]


def _manufacturing(
    authority: Authority,
    root: pki.CertificateAuthority,
    given: str | None,
    adopt: bool,
    created: list[Path],
) -> _NewCa:
    """The new manufacturing CA under ``root``, named and numbered after the first one."""
    first, name, uri = _placed(authority, CaKind.MANUFACTURING, given)
    key = _key(authority, uri, authority.certificate, adopt, created)
    common_name = _numbered(_common_name(first), name.rpartition("-")[2])
    template = pki.manufacturing_ca(authority.organization, common_name)
    return _NewCa(name, CaKind.MANUFACTURING, root.create_subordinate(template, key), uri)


def _placed(
    authority: Authority, kind: CaKind, given: str | None
) -> tuple[x509.Certificate, str, str]:
    """The first CA of ``kind``'s certificate, the next name ("manufacturing-2") and
    the URI of its key (given, or beside the first CA's key)."""
    rows = [row for row in authority.records.values() if row.kind == kind]
    number = len(rows) + 1
    uri = absolute_key_uri(given) if given else _beside(rows[0].key_uri, number)
    return authority.certificate_of(rows[0].name), f"{rows[0].name}-{number}", uri


def _beside(uri: str, number: int) -> str:
    """A URI for a new key where the key at ``uri`` is, its label numbered.

    ``soft:/ws/ca/manufacturing-ca.pem`` becomes ``.../manufacturing-ca-2.pem``;
    ``pkcs11:token=factory;object=mfg-ca`` becomes ``...;object=mfg-ca-2`` in
    the same token (an ``id`` naming the old key is dropped). A TPM handle has
    no label to number: that key's URI must be given.
    """
    parsed = parse_key_uri(uri)
    if parsed.scheme == "soft":
        path = Path(parsed.path)
        return KeyUri("soft", path=str(path.with_stem(f"{path.stem}-{number}"))).render(
            redact=False
        )
    label = parsed.attributes.get("object")
    if parsed.scheme != "pkcs11" or label is None:
        raise ConfigError(f"cannot place a new key beside {parsed}: give its URI (--ca-key)")
    attributes = {k: v for k, v in parsed.attributes.items() if k != "id"}
    attributes["object"] = f"{label}-{number}"
    return KeyUri("pkcs11", MappingProxyType(attributes), parsed.query).render(redact=False)


def _key(
    authority: Authority,
    uri: str,
    like: x509.Certificate,
    adopt: bool,
    created: list[Path],
) -> pki.ca.CAKey:
    """A new CA key at ``uri`` of the same kind as ``like``'s, never one a CA already has."""
    spec = KeySpec(KeyAlgorithm.of(like.public_key()))
    key = new_ca_key(uri, spec, created, adopt=adopt)
    for name in authority.records:
        if authority.certificate_of(name).public_key() == key.public_key():
            raise ConfigError(f"the key at {parse_key_uri(uri)} is already CA {name}'s key")
    return key


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else "keyfab CA"


def _numbered(common_name: str, number: str) -> str:
    """The first CA's ``common_name`` with the new CA's number: "Acme Manufacturing CA 2".

    A distinct name keeps the CRLs and chains of the old and new CA apart for
    every relying party, including those that match issuers by name only.
    """
    suffix = f" {number}"
    return common_name[: _CN_MAX - len(suffix)] + suffix


def _check_unchanged(session: Session, authority: Authority) -> None:
    """Refuse if another rotation committed since ``authority`` read the CAs."""
    audit.lock(session)  # from here to commit no other writer adds a CA
    count = session.scalar(select(func.count()).select_from(CaRecord))
    if count != len(authority.records):
        raise ConflictError("another CA rotation ran meanwhile: run this one again")


def _retire(session: Session, names: list[str]) -> None:
    session.execute(update(CaRecord).where(CaRecord.name.in_(names)).values(retired_at=utc_now()))
