"""``Registry.lookup()``: the per-request token read without a transaction of its own.

What must hold: on PostgreSQL the autocommit mode ends with the lookup (the pooled
connection's next transaction still commits or rolls back as one); on SQLite
the lookup leaves the write lock to writers.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from keyfab.registry import Registry
from keyfab.registry.models import Sequence
from tests.server.postgres import Cluster

_DEVICE_COUNTER = select(Sequence.value).where(Sequence.name == "device")


def _counter(registry: Registry) -> int:
    with registry.lookup() as connection:
        return int(connection.execute(_DEVICE_COUNTER).scalar_one())


def _allocate_then_fail(registry: Registry) -> None:
    with registry.transaction() as session:
        registry.allocate(session, "device", 5)
        raise RuntimeError("roll back")


def test_lookup_leaves_later_transactions_atomic(postgres: Cluster) -> None:
    registry = Registry.open(postgres.create_database("lookup_atomic"), create=True)
    try:
        before = _counter(registry)
        with pytest.raises(RuntimeError):
            _allocate_then_fail(registry)
        assert _counter(registry) == before
    finally:
        registry.dispose()


def test_lookup_sees_committed_writes_at_once(postgres: Cluster) -> None:
    registry = Registry.open(postgres.create_database("lookup_fresh"), create=True)
    try:
        before = _counter(registry)
        with registry.transaction() as session:
            registry.allocate(session, "device", 3)
        assert _counter(registry) == before + 3
    finally:
        registry.dispose()


def test_sqlite_lookup_leaves_the_write_lock_to_writers(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    with registry.lookup() as connection:
        connection.execute(select(Sequence.value)).all()
        with sqlite3.connect(tmp_path / "r.db", timeout=0.5) as writer:
            writer.execute("BEGIN IMMEDIATE")  # 'database is locked' if the lookup held it
            writer.execute("UPDATE sequences SET value = value + 1")
    registry.dispose()
