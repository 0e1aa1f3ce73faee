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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from keyfab.audit._stream import Link, Times, links, message
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
    without escaping ``data``, which is already canonical JSON (``_stream.message``).
    """
    return hashlib.sha256(
        bytes.fromhex(prev_hash) + message(seq, at, kind, subject, data)
    ).hexdigest()


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


VERIFY_BATCH = 10_000
"""Events fetched per round trip when verifying: memory stays a few MB at any log size."""


def verify(session: Session, batch_size: int = VERIFY_BATCH) -> Report:
    """Recompute the chain from the first event; name the first broken link.

    Streams the log (``_stream.links``), so memory does not grow with it; one
    ``hashlib`` call per event over bytes prepared by the reader.
    """
    times, batches = links(session, batch_size)
    walk = _Walk(times)
    for rows in batches:
        broken = walk.check(rows)
        if broken is not None:
            return broken
    count, prev = walk.expected - 1, walk.prev
    head = session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1)).first()
    if head is None or head.seq != count or not _same(head.hash, prev):
        return Report(
            count, prev, count + 1, "events after the last one were removed (head mismatch)"
        )
    return Report(count, prev)


def _same(left: object, right: str) -> bool:
    """Constant-time equality of a stored hash and an expected one; junk is unequal."""
    return isinstance(left, str) and left.isascii() and hmac.compare_digest(left, right)


class _Walk:
    """The walk along the chain: the next seq expected and the hash it must follow."""

    def __init__(self, times: Times) -> None:
        self.expected, self.prev, self.prev_bytes = 1, GENESIS, bytes(32)
        self.times = times

    def check(self, rows: Sequence[Link]) -> Report | None:
        """Check a batch of links in order; the report of the first broken one, else None.

        The hot loop of ``keyfab audit verify``: locals only, one hash per link,
        ``compare_digest`` inline (a stored value it cannot compare, NULL or
        non-ASCII, raises TypeError: that link is broken).
        """
        expected, prev, prev_bytes = self.expected, self.prev, self.prev_bytes
        cache, spell, sha256, same, join = (
            self.times.cache, self.times.spell, hashlib.sha256, hmac.compare_digest, b"".join
        )  # fmt: skip
        seq, problem = expected, "does not follow"
        try:
            for seq, prev_hash, stored, at, head, tail in rows:
                if seq != expected:
                    return Report(expected - 1, prev, expected, f"event {expected} is missing")
                problem = "does not follow"
                if not same(prev_hash, prev):
                    break
                problem = "was altered"
                spelled = cache.get(at) or spell(at)
                if spelled is None or head is None or tail is None:
                    break
                link = sha256(join((prev_bytes, head, spelled, tail)))
                if not same(link.hexdigest(), stored):
                    break
                prev, prev_bytes, expected = stored, link.digest(), expected + 1
            else:
                self.expected, self.prev, self.prev_bytes = expected, prev, prev_bytes
                return None
        except TypeError:
            pass
        return Report(expected - 1, prev, seq, _broken(seq, problem))


def _broken(seq: int, problem: str) -> str:
    if problem == "does not follow":
        return f"event {seq} does not follow event {seq - 1}"
    return f"event {seq} was altered"
