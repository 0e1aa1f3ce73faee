"""An append-only, hash-chained audit log kept in the registry.

Each event's hash covers the previous event's hash and the event's own fields
as stored, so changing, deleting, inserting or reordering any row breaks the
chain from that row on. The ``audit_head`` row holds the newest link: it is
locked for every append (serialising writers across processes and engines) and
lets verification notice a log whose tail was cut off.

Events are appended in the same transaction as the change they record: a
certificate never exists in the registry without its issuance event.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from keyfab.clock import utc_now
from keyfab.errors import AuditError
from keyfab.registry.models import AuditEvent, AuditHead

GENESIS = "0" * 64
_EVENTS = AuditEvent.metadata.tables["audit_events"]
JSON = Mapping[str, Any]


def canonical_json(data: JSON) -> str:
    """One spelling for the same data: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link_hash(
    prev_hash: str, seq: int, at: datetime.datetime, kind: str, subject: str, data: str
) -> str:
    """The hash of one link: the previous hash, then each field as stored, length-prefixed.

    The 4-byte length before each UTF-8 field makes the encoding unambiguous
    without escaping ``data``, which is already canonical JSON.
    """
    digest = hashlib.sha256(bytes.fromhex(prev_hash))
    for field in (str(seq), at.isoformat(), kind, subject, data):
        encoded = field.encode()
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """An event to append: what happened (``kind``), to whom, and the details."""

    kind: str
    subject: str
    data: JSON


def append(session: Session, kind: str, subject: str, data: JSON) -> int:
    """Append one event in the caller's transaction; returns its sequence number."""
    return append_many(session, [Entry(kind, subject, data)])


_LOCK_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1).with_for_update()
_INSERT_EVENTS = insert(_EVENTS)
_MOVE_HEAD = update(AuditHead).where(AuditHead.id == 1)


def lock(session: Session) -> None:
    """Take the audit head's lock now, in the caller's transaction.

    For a writer that must read something and act on it before it appends
    (the next CRLNumber): every other writer waits here until it commits.
    """
    if session.connection().execute(_LOCK_HEAD).one_or_none() is None:
        raise AuditError("the audit log has no head row: the registry is damaged")


def append_many(session: Session, entries: Sequence[Entry]) -> int:
    """Append events in order in the caller's transaction; returns the last seq.

    The statements go straight to the session's connection (Core, not the ORM's
    bulk machinery: a third of an EST enrolment's CPU went there); on PostgreSQL
    the executemany becomes multi-row INSERTs (``registry.db``), so the head's
    lock is held for one statement however many events a group or a chunk adds.
    Pending ORM changes are flushed first, so events still follow what they
    record.
    """
    session.flush()
    connection = session.connection()
    head = connection.execute(_LOCK_HEAD).one_or_none()
    if head is None:
        raise AuditError("the audit log has no head row: the registry is damaged")
    seq, prev = head
    at = utc_now()
    rows = []
    for entry in entries:
        seq += 1
        data = canonical_json(entry.data)
        digest = link_hash(prev, seq, at, entry.kind, entry.subject, data)
        rows.append(
            {
                "seq": seq,
                "at": at,
                "kind": entry.kind,
                "subject": entry.subject,
                "data": data,
                "prev_hash": prev,
                "hash": digest,
            }
        )
        prev = digest
    if rows:
        connection.execute(_INSERT_EVENTS, rows)  # Core executemany: no ORM work per row
        connection.execute(_MOVE_HEAD, {"seq": seq, "hash": prev})
    return int(seq)


@dataclass(frozen=True)
class Report:
    """The outcome of checking the chain: how far it holds and where it breaks."""

    events: int
    head_hash: str
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(session: Session, batch_size: int = 5000) -> Report:
    """Recompute the chain from the first event; name the first broken link."""
    rows: Iterable[AuditEvent] = session.scalars(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch_size)
    )
    expected_seq, prev, count = 1, GENESIS, 0
    for event in rows:
        if event.seq != expected_seq:
            return Report(count, prev, expected_seq, f"event {expected_seq} is missing")
        if not hmac.compare_digest(event.prev_hash, prev):
            return Report(
                count, prev, event.seq, f"event {event.seq} does not follow event {event.seq - 1}"
            )
        digest = link_hash(prev, event.seq, event.at, event.kind, event.subject, event.data)
        if not hmac.compare_digest(digest, event.hash):
            return Report(count, prev, event.seq, f"event {event.seq} was altered")
        prev, expected_seq, count = event.hash, expected_seq + 1, count + 1
    head = session.get(AuditHead, 1)
    if head is None or head.seq != count or not hmac.compare_digest(head.hash, prev):
        return Report(
            count, prev, count + 1, "events after the last one were removed (head mismatch)"
        )
    return Report(count, prev)
