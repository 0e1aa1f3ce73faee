"""The audit chain read for verification: raw rows, a few thousand at a time.

Verifying ten million events must not hold them in memory, and the per-event
Python work bounds its speed. So rows come straight from the driver's cursor
(no ORM objects, no SQLAlchemy row processing), a batch at a time, as
``(seq, prev_hash, hash, message)`` where ``message`` is the length-prefixed
encoding of the link's fields that ``log.link_hash`` hashes after the previous
hash. The verifier then makes one ``hashlib`` call per event.

On PostgreSQL the rows come from a server-side cursor and the database
assembles ``message`` itself (``int4send`` for the length, ``convert_to`` for
UTF-8, the time spelled as Python's ``isoformat``), on its own core. That
grants the database nothing it did not have: it already supplies every field,
and a wrongly assembled message can only make a link fail to verify. A test
checks that both paths agree with ``link_hash`` on every engine.

Elsewhere (SQLite) the fields are read raw and encoded here; a time's spelling
is computed once per distinct stored value (appends share one time per call).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy.orm import Session

from keyfab.registry.models import AuditEvent

Link = tuple[int, str, str, Any, bytes | None, bytes | None]
"""(seq, prev_hash, hash, time as the driver gives it, head, tail).

``head`` is the encoded seq, ``tail`` the encoded kind, subject and data; the
time's encoding comes from ``Times`` (few distinct values: one per append
call). None where a stored field cannot be read: that link is altered.
"""

_PG_QUERY = """
SELECT seq, prev_hash, hash, at,
       pg_catalog.int4send(pg_catalog.length(f0)) || f0,
       pg_catalog.int4send(pg_catalog.length(f2)) || f2
    || pg_catalog.int4send(pg_catalog.length(f3)) || f3
    || pg_catalog.int4send(pg_catalog.length(f4)) || f4
FROM (SELECT seq, prev_hash, hash, at,
             pg_catalog.convert_to(seq::text, 'UTF8') AS f0,
             pg_catalog.convert_to(kind, 'UTF8') AS f2,
             pg_catalog.convert_to(subject, 'UTF8') AS f3,
             pg_catalog.convert_to(data, 'UTF8') AS f4
      FROM audit_events) AS links
ORDER BY seq
"""
_RAW_QUERY = "SELECT seq, prev_hash, hash, at, kind, subject, data FROM audit_events ORDER BY seq"


def field(value: str) -> bytes:
    """One field as a link encodes it: 4-byte big-endian length, then UTF-8."""
    encoded = value.encode()
    return len(encoded).to_bytes(4, "big") + encoded


def message(seq: int, at: datetime.datetime, kind: str, subject: str, data: str) -> bytes:
    """Everything a link hashes after the previous hash (the one definition of it)."""
    return b"".join(field(f) for f in (str(seq), at.isoformat(), kind, subject, data))


class Times:
    """Stored times to their encoded spelling, each distinct value parsed once.

    ``cache`` is read directly by the verifier's loop (a dict lookup per event);
    ``spell`` fills it on a miss. Bounded: appends share one time per call, so
    distinct values are few, and the cache is dropped whenever it grows large.
    """

    LIMIT = 4096

    def __init__(self, parse: Callable[[Any], Any]) -> None:
        self.cache: dict[Any, bytes] = {}
        self._parse = parse

    def spell(self, stored: Any) -> bytes | None:
        try:
            spelled = field(self._parse(stored).isoformat())
        except (ValueError, TypeError, AttributeError):
            return None
        if len(self.cache) >= self.LIMIT:
            self.cache.clear()
        self.cache[stored] = spelled
        return spelled


def links(session: Session, batch: int) -> tuple[Times, Iterator[Sequence[Link]]]:
    """Every event of the log in ``seq`` order, ``batch`` at a time, from the session's
    snapshot, and the ``Times`` that spells their times."""
    connection = session.connection()
    raw = connection.connection.driver_connection
    dialect = connection.dialect
    processor = AuditEvent.__table__.c.at.type.dialect_impl(dialect).result_processor(dialect, None)
    times = Times(processor or _unchanged)
    if dialect.name == "postgresql":
        return times, _postgres(raw, batch)
    return times, _encoded(raw, batch)


def _unchanged(value: Any) -> Any:
    return value


def _postgres(raw: Any, batch: int) -> Iterator[Sequence[Link]]:
    """A named (server-side) cursor: the client holds one batch, whatever the log's size.

    Binary results: no hex spelling of the byte strings on either side (a
    third of the time per event went there).
    """
    with raw.cursor(name="keyfab_audit_verify") as cursor:
        cursor.itersize = batch
        cursor.execute(_PG_QUERY, binary=True)
        while rows := cursor.fetchmany(batch):
            yield rows


def _encoded(raw: Any, batch: int) -> Iterator[Sequence[Link]]:
    cursor = raw.cursor()
    try:
        cursor.execute(_RAW_QUERY)
        while rows := cursor.fetchmany(batch):
            yield [_encode(row) for row in rows]
    finally:
        cursor.close()


def _encode(row: tuple[Any, ...]) -> Link:
    seq, prev, stored, at, kind, subject, data = row
    try:
        tail = field(kind) + field(subject) + field(data)
    except AttributeError:  # SQLite keeps whatever type was stored: not text, not a link
        return seq, prev, stored, at, None, None
    return seq, prev, stored, at, field(str(seq)), tail
