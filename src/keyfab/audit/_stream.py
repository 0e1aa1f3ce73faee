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

Link = tuple[int, str, str, bytes | None]
"""(seq, prev_hash, hash, message); message None when a stored field cannot be read."""

_PG_QUERY = """
SELECT seq, prev_hash, hash,
       pg_catalog.int4send(pg_catalog.length(f0)) || f0
    || pg_catalog.int4send(pg_catalog.length(f1)) || f1
    || pg_catalog.int4send(pg_catalog.length(f2)) || f2
    || pg_catalog.int4send(pg_catalog.length(f3)) || f3
    || pg_catalog.int4send(pg_catalog.length(f4)) || f4
FROM (SELECT seq, prev_hash, hash,
             pg_catalog.convert_to(seq::text, 'UTF8') AS f0,
             pg_catalog.convert_to(
                 pg_catalog.to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                 || CASE WHEN pg_catalog.date_trunc('second', at) = at THEN ''
                         ELSE pg_catalog.to_char(at AT TIME ZONE 'UTC', '.US') END
                 || '+00:00', 'UTF8') AS f1,
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


def links(session: Session, batch: int) -> Iterator[Sequence[Link]]:
    """Every event of the log in ``seq`` order, ``batch`` at a time, from the session's snapshot."""
    connection = session.connection()
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        yield from _postgres(raw, batch)
    else:
        dialect = connection.dialect
        processor = AuditEvent.__table__.c.at.type.dialect_impl(dialect).result_processor(
            dialect, None
        )
        yield from _encoded(raw, batch, processor or _unchanged)


def _unchanged(value: Any) -> Any:
    return value


def _postgres(raw: Any, batch: int) -> Iterator[Sequence[Link]]:
    """A named (server-side) cursor: the client holds one batch, whatever the log's size."""
    with raw.cursor(name="keyfab_audit_verify") as cursor:
        cursor.itersize = batch
        cursor.execute(_PG_QUERY)
        while rows := cursor.fetchmany(batch):
            yield [(seq, prev, stored, bytes(built)) for seq, prev, stored, built in rows]


def _encoded(raw: Any, batch: int, parse: Callable[[Any], Any]) -> Iterator[Sequence[Link]]:
    times: dict[Any, bytes | None] = {}
    cursor = raw.cursor()
    try:
        cursor.execute(_RAW_QUERY)
        while rows := cursor.fetchmany(batch):
            yield [_encode(row, times, parse) for row in rows]
    finally:
        cursor.close()


def _encode(
    row: tuple[Any, ...],
    times: dict[Any, bytes | None],
    parse: Callable[[Any], Any],
) -> Link:
    seq, prev, stored, at, kind, subject, data = row
    spelled = times.get(at, b"")
    if spelled == b"":
        spelled = times[at] = _time(at, parse)
        if len(times) > 4096:  # distinct times are few; bound the cache all the same
            times.clear()
    if spelled is None or not all(isinstance(v, str) for v in (kind, subject, data)):
        return seq, prev, stored, None
    seq_field = field(str(seq))
    return (
        seq,
        prev,
        stored,
        b"".join((seq_field, spelled, field(kind), field(subject), field(data))),
    )


def _time(stored: Any, parse: Callable[[Any], Any]) -> bytes | None:
    try:
        return field(parse(stored).isoformat())
    except (ValueError, TypeError, AttributeError):
        return None
