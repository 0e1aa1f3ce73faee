"""The manufacturer's CA run as a recorded service.

``Authority`` is the only thing in keyfab that signs with the manufacturing CA
key. Every signature it makes is recorded before anyone sees it: a certificate
gets its registry row and its audit event, a CRL its CRLNumber and its row, a
checkpoint its place in the chain, all in the transaction of the change (and a
checkpoint, once that commits, its witness file outside the database). The
batches, the service and the CLI call it; none of them signs on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from keyfab import audit, pki
from keyfab.authority import publication
from keyfab.clock import utc_now
from keyfab.errors import ConfigError
from keyfab.pki.ca import PublicKey
from keyfab.registry import CaRecord, Certificate, Registry, certificate_row, queries
from keyfab.rot import load_key
from keyfab.workspace import MANUFACTURING, ROOT, Workspace

_INSERT_CERTIFICATES = insert(Certificate)


@dataclass(frozen=True)
class Issued:
    """A certificate the CA signed, with what its registry row and audit event need."""

    certificate: x509.Certificate
    profile: pki.Profile
    key_label: str
    device_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # added to the audit event

    @property
    def serial_number(self) -> str:
        return pki.serial_hex(self.certificate)


def record(
    session: Session, issued: Sequence[Issued], events: Sequence[audit.Entry] = ()
) -> list[dict[str, Any]]:
    """Record certificates and their ``certificate.issued`` events, then ``events``.

    One executemany and one audit append however many certificates there are:
    a batch records a whole chunk this way, an EST enrolment a single one.
    Returns the rows written (their ``der`` saves the caller encoding again).
    """
    if not issued and not events:
        return []
    now = utc_now()
    rows, entries = [], []
    for item in issued:
        row = certificate_row(
            item.certificate,
            device_id=item.device_id,
            key_label=item.key_label,
            profile=item.profile,
            issued_at=now,
        )
        rows.append(row)
        details = {"serial_number": row["serial_number"], "profile": str(item.profile)}
        entries.append(
            audit.Entry("certificate.issued", row["subject"], {**details, **item.details})
        )
    if rows:
        session.connection().execute(_INSERT_CERTIFICATES, rows)
    audit.append_many(session, [*entries, *events])
    return rows


class Authority:
    """The workspace's manufacturing CA and the registry that records what it signs.

    The CA key is opened on first use only (``ca``): reading the chain, listing
    or revoking needs no HSM login, signing does.
    """

    def __init__(
        self, registry: Registry, *, owns_registry: bool = False, witness: Path | None = None
    ):
        self.registry = registry
        self._owns_registry = owns_registry
        self.witness = witness or audit.witness.directory(None)

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
    def _records(self) -> Mapping[str, CaRecord]:
        """The CAs as recorded (read once: the chain and key URIs cannot change meanwhile)."""
        return queries.authorities(self.registry)

    @functools.cached_property
    def chain(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(manufacturing CA, root) certificates, without opening any key."""
        rows = self._records
        if MANUFACTURING not in rows or ROOT not in rows:
            raise ConfigError("no manufacturing CA in this workspace: run 'keyfab init'")
        return (
            x509.load_der_x509_certificate(rows[MANUFACTURING].certificate),
            x509.load_der_x509_certificate(rows[ROOT].certificate),
        )

    @property
    def certificate(self) -> x509.Certificate:
        """The manufacturing CA certificate."""
        return self.chain[0]

    @property
    def organization(self) -> str:
        """The manufacturer's name, as the CA certificate gives it."""
        names = self.certificate.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        return str(names[0].value) if names else ""

    def key_uri(self, name: str = MANUFACTURING) -> str:
        """Where a CA's key lives (``root`` or ``manufacturing``), as recorded."""
        if name not in self._records:
            raise ConfigError(f"no {name} CA in this workspace: run 'keyfab init'")
        return self._records[name].key_uri

    @functools.cached_property
    def settings(self) -> publication.Settings:
        """The workspace's public URLs and validities (read once, like the chain)."""
        return publication.read(self.registry)

    @functools.cached_property
    def ca(self) -> pki.CertificateAuthority:
        """The manufacturing CA with its key opened in its root of trust.

        It adds the workspace's AIA and CRL distribution points, when
        configured, to everything it issues (``pki.Publication``).
        """
        manufacturing, root = self.chain
        return pki.CertificateAuthority(
            manufacturing,
            load_key(self.key_uri()),
            (root,),
            self.settings.publication(MANUFACTURING),
        )

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
    ) -> Issued:
        """Sign a certificate to be recorded by ``record`` in the caller's transaction."""
        certificate = self.ca.issue(template, public_key, serial_number=serial_number)
        return Issued(certificate, template.profile, key_label, device_id, details or {})

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
    ) -> x509.Certificate:
        """Sign and record a certificate that belongs to no device, in one transaction.

        ``witnessed`` ends that transaction with a checkpoint, for certificates
        that grant access (a station's): see ``checkpoint``.
        """
        issued = self.sign(
            template, public_key, key_label=key_label, details=details, serial_number=serial_number
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
