"""Witnessed checkpoints: each signed head also kept outside the database.

A checkpoint that lives only in the database proves little against whoever can
write to it: they can delete the newest events together with the checkpoints
that cover them, or delete every checkpoint and rebuild the chain. Like the
signed tree heads of a transparency log (RFC 9162, sigsum), each signed head is
therefore also written to a witness directory the database writer does not
control: one file per checkpoint, named by the sequence number it signs,
created once (``O_EXCL``), never rewritten, and flushed to disk with its
directory. The newest witness is the auditor's anchor: the log must still hold
that exact event and must not end before it.

Some event kinds grant or withdraw trust (``WITNESSED_KINDS``); keyfab always
signs and witnesses a checkpoint in the transaction that records one, so one of
them after the newest witness was not written by keyfab, or its witness was lost.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyfab.audit.checkpoint import KIND as CHECKPOINT
from keyfab.audit.checkpoint import SignedHead
from keyfab.audit.log import GENESIS, canonical_json
from keyfab.errors import AuditError, ConfigError
from keyfab.registry.models import AuditEvent, AuditHead
from keyfab.securefile import read_bounded, write_secret

ENVIRONMENT = "KEYFAB_WITNESS_DIR"
FORMAT = "keyfab-audit-witness"
WITNESSED_KINDS = frozenset(
    {
        "device.revoked",
        "certificate.revoked",
        "station.revoked",
        "token.created",
        "token.revoked",
        "station.certified",
        "batch.finished",
    }
)
"""Event kinds always followed by a checkpoint in the same transaction."""


def directory(home: Path | None) -> Path | None:
    """Where a workspace's witnesses go: ``$KEYFAB_WITNESS_DIR``, else ``<home>/witness``."""
    chosen = os.environ.get(ENVIRONMENT)
    if chosen:
        return Path(chosen).expanduser().absolute()
    return home / "witness" if home is not None else None


MAX_WITNESS_FILE = 64 * 1024
"""A witness is a signed head and one certificate: a few kilobytes."""


def file_name(seq: int) -> str:
    """The witness file of the checkpoint over event ``seq`` (zero-padded: sorts by name)."""
    return f"checkpoint-{seq:012d}.json"


def write(where: Path, point: SignedHead) -> Path:
    """Write ``point``'s witness file (0600, never overwritten) and make it durable.

    Call it only once the transaction holding the checkpoint event has
    committed: a witness of a rolled-back checkpoint would vouch for a head
    the log never had.
    """
    path = where / file_name(point.seq)
    body = canonical_json({FORMAT: 1, **point.to_data()}).encode() + b"\n"
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        _create(path, body)
    except OSError as error:
        raise AuditError(
            f"checkpoint over event {point.seq} is recorded but its witness {path} could not "
            f"be written ({error.strerror or error}): 'keyfab audit verify' will say so"
        ) from None
    return path


def _create(path: Path, body: bytes) -> None:
    try:
        write_secret(path, body, sync=True)
    except FileExistsError:
        raise AuditError(f"witness {path} exists already: witnesses are never rewritten") from None


@dataclass(frozen=True)
class Witness:
    """A signed head read from outside the database, and the file it came from."""

    point: SignedHead
    source: Path


def read(path: Path) -> Witness:
    """Parse one witness file; AuditError naming the file if it cannot be read."""
    try:
        data = json.loads(read_bounded(path, MAX_WITNESS_FILE, "checkpoint"))
        if not isinstance(data, dict) or data.get(FORMAT) != 1:
            raise ValueError(f"not a {FORMAT} file")
        return Witness(SignedHead.from_data(data), path)
    except (ConfigError, ValueError) as error:
        raise AuditError(f"cannot read checkpoint {path}: {error}") from None


def found(where: Path | None) -> list[Witness]:
    """Every witness in a directory (none if it does not exist), oldest first."""
    if where is None or not where.is_dir():
        return []
    witnesses = [read(path) for path in sorted(where.glob("checkpoint-*.json"))]
    for witness in witnesses:
        if witness.source.name != file_name(witness.point.seq):
            raise AuditError(f"witness {witness.source} holds checkpoint {witness.point.seq}")
    return witnesses


def check(session: Session, trusted_der: Sequence[bytes], witnesses: Sequence[Witness]) -> Witness:
    """Check every witness's signature, then hold the log to the newest; return it.

    The newest must name an event the log still holds with the same hash
    (else the chain was rebuilt), the log must not end before it (else its tail
    was cut), and no event after it may be of a witnessed kind (else it was
    forged, or its witness lost). Raises AuditError saying which.
    """
    for witness in witnesses:
        problem = witness.point.problem(trusted_der)
        if problem:
            raise AuditError(f"checkpoint {witness.source} {problem}")
    newest = max(witnesses, key=lambda witness: witness.point.seq)
    _holds(session, newest)
    _nothing_unwitnessed(session, newest)
    return newest


def _holds(session: Session, witness: Witness) -> None:
    """The log still has the witnessed head, then the checkpoint event that signed it.

    The checkpoint event (``seq + 1``) committed before its witness was
    written, so a log ending before it lost its tail.
    """
    seq, source = witness.point.seq, witness.source
    head = session.get(AuditHead, 1)
    last = head.seq if head is not None else 0
    if last <= seq:
        raise AuditError(
            f"the log ends at event {last} but {source} witnessed event {seq} and its "
            f"checkpoint event {seq + 1}: its tail was cut"
        )
    event = session.get(AuditEvent, seq)
    stored = event.hash if event is not None else GENESIS if seq == 0 else ""
    if not hmac.compare_digest(stored, witness.point.head):
        raise AuditError(
            f"event {seq} is not the one {source} witnessed: the chain was rebuilt or rewritten"
        )
    if not _records(session.get(AuditEvent, seq + 1), witness.point):
        raise AuditError(
            f"event {seq + 1} is not the checkpoint {source} witnessed: "
            "it was deleted or replaced and the chain rebuilt"
        )


def _records(event: AuditEvent | None, point: SignedHead) -> bool:
    """Whether ``event`` is the checkpoint event holding ``point``."""
    if event is None or event.kind != CHECKPOINT:
        return False
    try:
        stored = SignedHead.from_data(json.loads(event.data))
    except ValueError:
        return False
    return stored.seq == point.seq and hmac.compare_digest(stored.signature, point.signature)


def _nothing_unwitnessed(session: Session, witness: Witness) -> None:
    first = session.execute(
        select(AuditEvent.seq, AuditEvent.kind)
        .where(AuditEvent.seq > witness.point.seq, AuditEvent.kind.in_(WITNESSED_KINDS))
        .order_by(AuditEvent.seq)
        .limit(1)
    ).first()
    if first is not None:
        raise AuditError(
            f"event {first.seq} ({first.kind}) comes after the newest witnessed checkpoint "
            f"(event {witness.point.seq}, {witness.source}), yet keyfab witnesses every "
            f"{first.kind}: it was forged, or its witness was lost"
        )
