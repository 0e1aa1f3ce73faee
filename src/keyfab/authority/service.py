"""The manufacturer's CA run as a recorded service.

``Authority`` is the only thing in keyfab that signs with the manufacturing CA
key. Every signature it makes is recorded before anyone sees it: a certificate
gets its registry row and its audit event, a CRL its CRLNumber and its row, a
checkpoint its place in the chain, all in the transaction of the change (and a
checkpoint, once that commits, its witness file outside the database). The
batches, the service and the CLI call it; none of them signs on its own.
"""

from __future__ import annotations

import datetime
import enum
import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority import publication
from keyfab.authority.group import GroupCommit, Unit
from keyfab.clock import utc_now
from keyfab.errors import ConfigError, NotFoundError, PkiError
from keyfab.pki.ca import PublicKey
from keyfab.registry import CaKind, CaRecord, Certificate, Registry, certificate_row, queries
from keyfab.rot import load_key
from keyfab.workspace import Workspace

_INSERT_CERTIFICATES = insert(Certificate)


@dataclass(frozen=True)
class Issued:
    """A certificate the CA signed, with what its registry row and audit event need."""

    certificate: x509.Certificate
    profile: pki.Profile
    key_label: str
    device_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # added to the audit event
    subject: x509.Name | None = None  # the name it was signed with (saves parsing it back)
    issuer: str | None = None  # the workspace CA that signed it, when the signer knows

    @property
    def serial_number(self) -> str:
        return pki.serial_hex(self.certificate)


def record(
    session: Session,
    issued: Sequence[Issued],
    events: Sequence[audit.Entry] = (),
    *,
    signers: Mapping[bytes, str] | None = None,
) -> list[dict[str, Any]]:
    """Record certificates and their ``certificate.issued`` events, then ``events``.

    One executemany and one audit append however many certificates there are:
    a batch records a whole chunk this way, an EST enrolment a single one.
    Each row names the CA that really signed it: the one the signer names
    (``Issued.issuer``, set by ``Authority.sign`` from the CA it opened), else
    the one its authorityKeyIdentifier matches, so a batch or a service that
    opened its CA before a rotation still puts what it signs on the right CA's
    CRL. ``signers`` (``Authority.signer_ids``) saves reading the CAs again; a
    certificate no CA in it signed is looked up.
    Returns the rows written (their ``der`` saves the caller encoding again).
    """
    return record_all(session, [(issued, events)], signers=signers)


def record_all(
    session: Session,
    units: Sequence[tuple[Sequence[Issued], Sequence[audit.Entry]]],
    *,
    signers: Mapping[bytes, str] | None = None,
) -> list[dict[str, Any]]:
    """``record`` for several units at once (a group commit's members), in one insert
    and one audit append: each unit's ``certificate.issued`` events, then its own."""
    now = utc_now()
    rows: list[dict[str, Any]] = []
    entries: list[audit.Entry] = []
    known = _Signers(session, signers)
    for issued, events in units:
        for item in issued:
            row = _row(item, now, known)
            rows.append(row)
            details = {"serial_number": row["serial_number"], "profile": str(item.profile)}
            entries.append(
                audit.Entry("certificate.issued", row["subject"], {**details, **item.details})
            )
        entries += events
    if rows:
        session.connection().execute(_INSERT_CERTIFICATES, rows)
    if entries:
        audit.append_many(session, entries)
    return rows


class _Signers:
    """CA key identifiers to names: the caller's if given, the recorded ones read once if not."""

    def __init__(self, session: Session, given: Mapping[bytes, str] | None):
        self._session, self._given, self._read = session, given or {}, False

    def name(self, certificate: x509.Certificate) -> str | None:
        found = _issuer(certificate, self._given)
        if found is None and not self._read:  # a CA the caller did not know: read them
            self._given, self._read = _signers(self._session), True
            found = _issuer(certificate, self._given)
        return found


def _row(item: Issued, now: datetime.datetime, signers: _Signers) -> dict[str, Any]:
    """The registry row of one certificate, naming the CA that signed it."""
    issuer = item.issuer or signers.name(item.certificate)
    if issuer is None:  # never a row no CRL can list
        raise PkiError(f"no CA of this workspace signed certificate {item.serial_number}")
    return certificate_row(
        item.certificate,
        device_id=item.device_id,
        key_label=item.key_label,
        profile=item.profile,
        issued_at=now,
        issuer=issuer,
        subject=item.subject,
    )


class CaState(enum.StrEnum):
    """What a CA of the workspace does now, as ``keyfab ca show`` says it."""

    ISSUING = "issuing"  # the manufacturing CA that signs new certificates
    ROOT = "root"  # the issuing CA's root
    SERVING = "serving"  # retired: issues nothing, signs the CRL of what it signed
    EXPIRED = "expired"  # retired and past its notAfter: nothing it signed verifies


@functools.lru_cache(maxsize=64)
def _certificate(der: bytes) -> x509.Certificate:
    """A CA certificate parsed once per process (CA records are few and never change)."""
    return x509.load_der_x509_certificate(der)


@functools.lru_cache(maxsize=64)
def _key_id(der: bytes) -> bytes:
    """The subjectKeyIdentifier of a CA certificate (keyfab's CAs all carry one)."""
    extension = _certificate(der).extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return extension.value.digest


def issuer_name(certificate: x509.Certificate, cas: Mapping[str, CaRecord]) -> str | None:
    """The name of the CA among ``cas`` whose key signed ``certificate``, if any.

    Matched on the authorityKeyIdentifier: CAs of a workspace never share a
    key (rotation refuses to reuse one), while a root keeps its name across a
    rollover, so the name alone would not tell the roots apart.
    """
    signers = {_key_id(row.certificate): name for name, row in cas.items()}
    return _issuer(certificate, signers)


def _issuer(certificate: x509.Certificate, signers: Mapping[bytes, str]) -> str | None:
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return None if aki.value.key_identifier is None else signers.get(aki.value.key_identifier)


def _signers(session: Session) -> Mapping[bytes, str]:
    """Each workspace CA's key identifier and name, read in the caller's transaction."""
    rows = session.execute(select(CaRecord.name, CaRecord.certificate))
    return {_key_id(der): name for name, der in rows}


class Authority:
    """The workspace's manufacturing CA and the registry that records what it signs.

    The workspace may hold several CAs (``records``): the roots, the
    manufacturing CA that issues now (``issuing``, ``ca``, ``chain``) and the
    retired ones that still sign CRLs for what they issued (``open_ca``). A
    key is opened on first use only: reading the chain, listing or revoking
    needs no HSM login, signing does.
    """

    def __init__(
        self, registry: Registry, *, owns_registry: bool = False, witness: Path | None = None
    ):
        self.registry = registry
        self._owns_registry = owns_registry
        self.witness = witness or audit.witness.directory(None)
        self._opened: dict[str, pki.CertificateAuthority] = {}

    @classmethod
    def open(cls, workspace: Workspace, registry: Registry | None = None) -> Authority:
        """The authority of a workspace (close it, or use it as a context manager).

        Given the workspace's ``registry`` already open, it works on that one
        and leaves closing it to its owner.
        """
        return cls(
            registry or workspace.registry(),
            owns_registry=registry is None,
            witness=audit.witness.directory(workspace.home),
        )

    def __enter__(self) -> Authority:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_registry:
            self.registry.dispose()

    @functools.cached_property
    def records(self) -> Mapping[str, CaRecord]:
        """The CAs as recorded, oldest first (read once: a rotation is seen by the next open)."""
        return queries.authorities(self.registry)

    def record_of(self, name: str) -> CaRecord:
        """CA ``name``'s record, or NotFoundError."""
        found = self.records.get(name)
        if found is None:
            raise NotFoundError(f"no CA named {name!r} in this workspace", slug="ca-not-found")
        return found

    @functools.cached_property
    def signer_ids(self) -> Mapping[bytes, str]:
        """Each recorded CA's key identifier and name: how ``record`` names a row's issuer."""
        return {_key_id(row.certificate): name for name, row in self.records.items()}

    @functools.cached_property
    def group(self) -> GroupCommit:
        """This process's group commit for enrolments (see ``authority.group``)."""
        return GroupCommit(self.registry, self._record_units)

    def _record_units(self, session: Session, units: Sequence[Unit[Any]]) -> None:
        record_all(session, [(u.issued, u.events) for u in units], signers=self.signer_ids)

    @functools.cached_property
    def issuing(self) -> str:
        """The name of the CA that issues now: the newest unretired manufacturing CA."""
        names = [
            name
            for name, row in self.records.items()
            if row.kind == CaKind.MANUFACTURING and row.retired_at is None
        ]
        if not names:
            raise ConfigError("no manufacturing CA in this workspace: run 'keyfab init'")
        return names[-1]

    def certificate_of(self, name: str) -> x509.Certificate:
        """CA ``name``'s certificate, without opening its key."""
        return _certificate(self.record_of(name).certificate)

    def issuer_of(self, name: str) -> str:
        """The name of the CA that signed CA ``name``'s certificate (a root: itself)."""
        return issuer_name(self.certificate_of(name), self.records) or name

    @functools.cached_property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(issuing manufacturing CA, its root) certificates, without opening any key."""
        issuing = self.issuing
        return self.certificate_of(issuing), self.certificate_of(self.issuer_of(issuing))

    @property
    def certificate(self) -> x509.Certificate:
        """The issuing manufacturing CA's certificate."""
        return self.chain[0]

    def published(self) -> tuple[x509.Certificate, ...]:
        """Every CA certificate a device may need now: EST ``cacerts`` and the server's trust.

        The issuing chain first; then every other CA still valid (a retired
        manufacturing CA's fleet keeps verifying, an old root stays trusted
        during its overlap); then the newest rollover's link certificates.
        """
        now = utc_now()
        first = [self.issuing, self.issuer_of(self.issuing)]
        others = [
            name
            for name in self.records
            if name not in first and self.certificate_of(name).not_valid_after_utc > now
        ]
        update = queries.root_update(self.registry)
        links = () if update is None else (update.new_with_old, update.old_with_new)
        return (*(self.certificate_of(name) for name in first + others), *links)

    def state(self, name: str) -> CaState:
        """What CA ``name`` does now (see ``CaState``)."""
        if name == self.issuing:
            return CaState.ISSUING
        if name == self.issuer_of(self.issuing):
            return CaState.ROOT
        expired = self.certificate_of(name).not_valid_after_utc <= utc_now()
        return CaState.EXPIRED if expired else CaState.SERVING

    def signers(self) -> list[x509.Certificate]:
        """Every manufacturing CA the workspace has had: who signed its checkpoints.

        A rotation's own checkpoint is signed by the CA it retires, so the log
        passes from one signer to the next without a gap an auditor must trust.
        """
        rows = self.records.items()
        return [self.certificate_of(n) for n, r in rows if r.kind == CaKind.MANUFACTURING]

    @property
    def organization(self) -> str:
        """The manufacturer's name, as the CA certificate gives it."""
        names = self.certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        return str(names[0].value) if names else ""

    def key_uri(self, name: str | None = None) -> str:
        """Where CA ``name``'s key lives (default: the issuing CA's), as recorded."""
        return self.record_of(name or self.issuing).key_uri

    @functools.cached_property
    def settings(self) -> publication.Settings:
        """The workspace's public URLs and validities (read once, like the chain)."""
        return publication.read(self.registry)

    @functools.cached_property
    def ca(self) -> pki.CertificateAuthority:
        """The issuing manufacturing CA with its key opened in its root of trust."""
        return self.open_ca(self.issuing)

    def open_ca(self, name: str) -> pki.CertificateAuthority:
        """CA ``name`` with its key opened (once per Authority): to sign its CRL, say."""
        if name not in self._opened:
            certificate = self.certificate_of(name)
            parent = self.issuer_of(name)
            above = () if parent == name else (self.certificate_of(parent),)
            self._opened[name] = pki.CertificateAuthority(
                certificate,
                load_key(self.key_uri(name)),
                above,
                self.settings.publication(name),  # AIA and CRL distribution points, if set
            )
        return self._opened[name]

    def refresh(self) -> None:
        """Forget what was read and opened: the next use sees the CAs as recorded now."""
        for cached in ("records", "signer_ids", "issuing", "chain", "ca", "settings"):
            self.__dict__.pop(cached, None)
        self._opened.clear()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.registry.transaction() as session:
            yield session

    def sign(
        self,
        template: pki.Template,
        public_key: PublicKey,
        *,
        key_label: str,
        device_id: int | None = None,
        details: Mapping[str, Any] | None = None,
        serial_number: int | None = None,
        ca: str | None = None,
    ) -> Issued:
        """Sign a certificate to be recorded by ``record`` in the caller's transaction.

        ``ca`` names another CA of the workspace than the issuing one: a retired
        CA still delegates its own OCSP signer, for instance.
        """
        signer = self.ca if ca is None else self.open_ca(ca)
        certificate = signer.issue(template, public_key, serial_number=serial_number)
        name = self.issuing if ca is None else ca
        return Issued(
            certificate,
            template.profile,
            key_label,
            device_id,
            details or {},
            template.subject,
            name,
        )

    def issue(
        self,
        template: pki.Template,
        public_key: PublicKey,
        *,
        key_label: str,
        details: Mapping[str, Any] | None = None,
        events: Sequence[audit.Entry] = (),
        serial_number: int | None = None,
        witnessed: bool = False,
        ca: str | None = None,
    ) -> x509.Certificate:
        """Sign and record a certificate that belongs to no device, in one transaction.

        ``witnessed`` ends that transaction with a checkpoint, for certificates
        that grant access (a station's): see ``checkpoint``.
        """
        issued = self.sign(
            template,
            public_key,
            key_label=key_label,
            details=details,
            serial_number=serial_number,
            ca=ca,
        )
        with self.transaction() as session:
            record(session, [issued], events)
            if witnessed:
                self.checkpoint(session)
        return issued.certificate

    def checkpoint(self, session: Session) -> int:
        """Sign the audit chain's head with the CA key, in the caller's transaction.

        The checkpoint event is appended now; its witness file is written only
        once the transaction commits (never for one that rolls back, which
        would witness a head the log never had). Returns the event's seq.
        """
        where = self.witness
        if where is None:
            raise ConfigError(
                f"no witness directory for checkpoints: set {audit.witness.ENVIRONMENT}"
            )
        point = audit.sign_head(session, self.ca.key, self.ca.certificate)
        seq = audit.append_checkpoint(session, point)
        _witness_on_commit(session, where, point)
        return seq


_PENDING = "keyfab.audit.witness.pending"


def _witness_on_commit(session: Session, where: Path, point: audit.SignedHead) -> None:
    """Queue ``point``'s witness file for after ``session`` commits; drop it on rollback."""
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
        event.listen(session, "after_commit", _write_pending)
        event.listen(session, "after_rollback", _drop_pending)
    pending.append((where, point))


def _write_pending(session: Session) -> None:
    pending = session.info[_PENDING]
    while pending:
        where, point = pending.pop(0)
        audit.witness.write(where, point)


def _drop_pending(session: Session) -> None:
    session.info[_PENDING].clear()


def labelled(prefix: str) -> tuple[int, str]:
    """A new serial number and the key label ``<prefix>:<first 16 hex digits>`` naming it.

    For certificates that belong to no device key (stations, the server's TLS,
    EST enrolments): the label keeps them apart in listings and stays unique.
    """
    number = pki.new_serial_number()
    return number, f"{prefix}:{pki.serial_hex(number)[:16]}"


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: how audit events name a CA certificate."""
    return certificate.fingerprint(hashes.SHA256()).hex()
