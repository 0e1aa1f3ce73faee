import sqlite3
from pathlib import Path

import pytest

from keyfab import audit
from keyfab.registry import Registry


@pytest.fixture
def db(tmp_path: Path) -> tuple[Registry, Path]:
    path = tmp_path / "r.db"
    registry = Registry.open(f"sqlite:///{path}", create=True)
    with registry.transaction() as session:
        for i in range(1, 6):
            audit.append(session, "test.event", f"subject-{i}", {"i": i, "text": "é"})
    return registry, path


def _verify(registry: Registry) -> audit.Report:
    with registry.transaction() as session:
        return audit.verify(session)


def _sql(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)


def test_intact_chain_verifies(db: tuple[Registry, Path]) -> None:
    report = _verify(db[0])
    assert report.ok
    assert report.events == 5


def test_changed_row_is_named(db: tuple[Registry, Path]) -> None:
    _sql(db[1], "UPDATE audit_events SET data = '{\"i\":99}' WHERE seq = 3")
    report = _verify(db[0])
    assert (report.broken_at, report.reason) == (3, "event 3 was altered")


def test_changed_time_is_named(db: tuple[Registry, Path]) -> None:
    _sql(db[1], "UPDATE audit_events SET at = '2020-01-01 00:00:00.000000' WHERE seq = 2")
    assert _verify(db[0]).broken_at == 2


def test_deleted_row_is_named(db: tuple[Registry, Path]) -> None:
    _sql(db[1], "DELETE FROM audit_events WHERE seq = 2")
    report = _verify(db[0])
    assert (report.broken_at, report.reason) == (2, "event 2 is missing")


def test_reordered_rows_are_detected(db: tuple[Registry, Path]) -> None:
    _sql(
        db[1],
        "UPDATE audit_events SET seq = -1 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = -1",
    )
    report = _verify(db[0])
    assert report.broken_at == 2
    assert "does not follow" in report.reason


def test_cut_tail_is_detected(db: tuple[Registry, Path]) -> None:
    _sql(db[1], "DELETE FROM audit_events WHERE seq = 5")
    report = _verify(db[0])
    assert report.broken_at == 5
    assert "head mismatch" in report.reason


def test_rewritten_chain_without_head_is_detected(db: tuple[Registry, Path]) -> None:
    """Recomputing every hash after a change still leaves the head pointing elsewhere."""
    registry, path = db
    with registry.transaction() as session:
        good_head = audit.verify(session).head_hash
    _sql(
        path, "DELETE FROM audit_events", "UPDATE audit_head SET seq = 0, hash = '" + "0" * 64 + "'"
    )
    with registry.transaction() as session:
        for i in range(1, 6):
            audit.append(session, "test.event", f"subject-{i}", {"i": i * 10})
    assert _verify(registry).head_hash != good_head
