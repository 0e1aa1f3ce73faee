"""The registry's scale paths on PostgreSQL: the streamed audit verification (the
database assembles what is hashed) and keyset device pages walking an index."""

from __future__ import annotations

import datetime

import pytest
from sqlalchemy import text

from keyfab import audit
from keyfab.audit._stream import links, message
from keyfab.registry import Registry
from tests.server.postgres import Cluster


@pytest.fixture
def chain(postgres: Cluster, request: pytest.FixtureRequest) -> Registry:
    name = "audit_" + request.node.name.removeprefix("test_")[:40]
    registry = Registry.open(postgres.create_database(name), create=True)
    with registry.transaction() as session:
        for i in range(1, 8):
            audit.append(session, "test.event", f"subject-{i}", {"i": i, "text": "é ✓ \u00a0"})
    return registry


def test_postgres_assembles_exactly_what_link_hash_hashes(chain: Registry) -> None:
    """Whole seconds and microseconds, non-ASCII text: the bytes the database builds
    are the Python definition's, and every link verifies in small batches."""
    odd = datetime.datetime(2026, 1, 2, 3, 4, 5, 60_001, tzinfo=datetime.UTC)
    with chain.transaction() as session:
        session.execute(text("UPDATE audit_events SET at = :at WHERE seq = 3"), {"at": odd})
        rows = session.execute(
            text("SELECT seq, at, kind, subject, data FROM audit_events ORDER BY seq")
        ).all()
        times, batches = links(session, 3)
        built = [
            b"".join((head or b"", times.spell(at) or b"", tail or b""))
            for batch in batches
            for _, _, _, at, head, tail in batch
        ]
    assert built == [message(*row) for row in rows]
    assert b"2026-01-02T03:04:05.060001+00:00" in built[2]
    chain.dispose()


def test_postgres_verify_streams_and_names_the_broken_link(chain: Registry) -> None:
    with chain.reading() as session:
        report = audit.verify(session, batch_size=2)
    assert (report.ok, report.events) == (True, 7)
    with chain.transaction() as session:
        session.execute(text("UPDATE audit_events SET subject = 'subject-x' WHERE seq = 5"))
    with chain.reading() as session:
        report = audit.verify(session, batch_size=2)
    assert (report.broken_at, report.reason) == (5, "event 5 was altered")
    chain.dispose()
