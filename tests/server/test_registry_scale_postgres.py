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


def test_postgres_upgrade_to_0013_and_keyset_pages_walk_the_new_indexes(
    postgres: Cluster,
) -> None:
    """An 0011 database with devices in it upgrades; a page of one batch (and state)
    is one range of the (batch, id) / (batch, state, id) index, not a sort."""
    from alembic import command
    from sqlalchemy import create_engine

    from keyfab.registry import queries
    from keyfab.registry.db import _alembic

    url = postgres.create_database("upgrade_0013")
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_alembic(connection), "0011")
        connection.execute(
            text(
                "INSERT INTO batches (id, name, product, recipe, recipe_dir, count, state,"
                " created_at) VALUES (1, 'b1', 'p1', '', '', 3000, 'finished', now()),"
                " (2, 'b2', 'p2', '', '', 3000, 'finished', now())"
            )
        )
        connection.execute(
            text(
                "INSERT INTO devices (serial, batch_id, slot, state, created_at, attestation)"
                " SELECT 'SN' || n, 1 + n % 2, n, CASE WHEN n % 7 = 0 THEN 'failed'"
                " ELSE 'provisioned' END, now(), 'never' FROM generate_series(1, 6000) AS n"
            )
        )
    engine.dispose()
    registry = Registry.open(url)
    try:
        with registry.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as vacuum:
            vacuum.exec_driver_sql("VACUUM ANALYZE devices")  # after 0014's back-fill rewrote them
        with registry.engine.begin() as connection:
            plan = " ".join(
                row[0]
                for row in connection.exec_driver_sql(
                    "EXPLAIN SELECT id FROM devices WHERE batch_id = 2 AND state = 'failed'"
                    " AND id > 100 ORDER BY id LIMIT 51"
                )
            )
        assert "_keyset on devices" in plan  # an index ending in id: no sort, no full read
        assert "Sort" not in plan
        with registry.engine.begin() as connection:  # 0014: a product's page too
            plan = " ".join(
                row[0]
                for row in connection.exec_driver_sql(
                    "EXPLAIN SELECT id FROM devices WHERE (product, id) > ('p1', 100)"
                    " AND product <= 'p1' ORDER BY product, id LIMIT 51"  # as device_page asks
                )
            )
        assert "ix_devices_product_keyset on devices" in plan
        assert "Sort" not in plan
        listing = queries.device_listing(registry, batch="b2", state="failed", limit=5)
        serials = [row.device.serial for row in listing.items]
        assert serials == ["SN7", "SN21", "SN35", "SN49", "SN63"]
        following = queries.device_listing(
            registry, batch="b2", state="failed", limit=5, cursor=listing.next_cursor
        )
        assert following.items[0].device.serial == "SN77"
        by_product = queries.device_listing(registry, product="p1", limit=3)
        assert [row.device.serial for row in by_product.items] == ["SN2", "SN4", "SN6"]
    finally:
        registry.dispose()


def test_a_long_verify_compares_with_the_head_of_its_own_snapshot(chain: Registry) -> None:
    """Writers appending while the log streams must not look like a cut tail."""
    with chain.reading() as session:
        _, batches = links(session, 2)
        assert [row[0] for row in next(batches)] == [1, 2]  # the snapshot is taken
        with chain.transaction() as writer:
            audit.append(writer, "test.late", "subject-late", {})
        head = session.execute(text("SELECT seq FROM audit_head")).scalar_one()
        rest = [row[0] for batch in batches for row in batch]
    assert head == 7
    assert rest == [3, 4, 5, 6, 7]
    with chain.reading() as session:
        assert audit.verify(session).events == 8
    chain.dispose()
