import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keyfab import audit
from keyfab.errors import AuditError
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


def _rebuild_chain(path: Path) -> None:
    """What an attacker with database access does: recompute every link and the head."""
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT seq, at, kind, subject, data FROM audit_events ORDER BY seq"
        ).fetchall()
        prev = audit.GENESIS
        for seq, at, kind, subject, data in rows:
            moment = datetime.datetime.fromisoformat(at).replace(tzinfo=datetime.UTC)
            digest = audit.log.link_hash(prev, seq, moment, kind, subject, data)
            connection.execute(
                "UPDATE audit_events SET prev_hash=?, hash=? WHERE seq=?", (prev, digest, seq)
            )
            prev = digest
        connection.execute("UPDATE audit_head SET hash=? WHERE id=1", (prev,))


def test_checkpoint_catches_a_rebuilt_chain(db: tuple[Registry, Path], ca_pair: Any) -> None:
    registry, path = db
    _, mfg = ca_pair
    with registry.transaction() as session:
        audit.sign_checkpoint(session, mfg.key, mfg.certificate)
        audit.append(session, "after", "x", {})
    with registry.transaction() as session:
        assert audit.verify_checkpoints(session, [mfg.certificate]).latest == 5
    _sql(path, "UPDATE audit_events SET data = '{\"i\":666}' WHERE seq = 3")
    _rebuild_chain(path)
    with registry.transaction() as session:
        assert audit.verify(session).ok  # the chain alone is fooled
        with pytest.raises(AuditError, match="checkpoint 6 does not match event 5"):
            audit.verify_checkpoints(session, [mfg.certificate])


def test_checkpoint_signer_must_be_trusted(db: tuple[Registry, Path], ca_pair: Any) -> None:
    registry, _ = db
    root, mfg = ca_pair
    with registry.transaction() as session:
        audit.sign_checkpoint(session, mfg.key, mfg.certificate)
    with registry.transaction() as session, pytest.raises(AuditError, match="untrusted"):
        audit.verify_checkpoints(session, [root.certificate])


def test_forged_checkpoint_signature(db: tuple[Registry, Path], ca_pair: Any) -> None:
    registry, path = db
    _, mfg = ca_pair
    with registry.transaction() as session:
        audit.sign_checkpoint(session, mfg.key, mfg.certificate)
    with sqlite3.connect(path) as connection:
        data = json.loads(
            connection.execute("SELECT data FROM audit_events WHERE seq = 6").fetchone()[0]
        )
        data["seq"], data["head"] = (
            4,
            connection.execute("SELECT hash FROM audit_events WHERE seq=4").fetchone()[0],
        )
        connection.execute(
            "UPDATE audit_events SET data=? WHERE seq=6", (audit.canonical_json(data),)
        )
    with registry.transaction() as session, pytest.raises(AuditError, match="bad signature"):
        audit.verify_checkpoints(session, [mfg.certificate])


def test_unreadable_stored_fields_break_the_link_not_the_verifier(
    db: tuple[Registry, Path],
) -> None:
    """A time that is no time, a hash with non-ASCII text, a number as a kind: each is
    a broken link named by seq, never an exception out of the streaming reader."""
    _sql(db[1], "UPDATE audit_events SET at = 'not a time' WHERE seq = 2")
    assert _verify(db[0]).broken_at == 2
    _sql(db[1], "UPDATE audit_events SET at = (SELECT at FROM audit_events WHERE seq = 1)")
    _sql(db[1], "UPDATE audit_events SET hash = 'é' || substr(hash, 2) WHERE seq = 4")
    assert _verify(db[0]).broken_at == 4


def test_verify_reads_in_batches_smaller_than_the_log(db: tuple[Registry, Path]) -> None:
    with db[0].reading() as session:
        report = audit.verify(session, batch_size=2)
    assert (report.ok, report.events) == (True, 5)
    _sql(db[1], "UPDATE audit_events SET kind = 7 WHERE seq = 5")
    with db[0].reading() as session:
        assert audit.verify(session, batch_size=2).broken_at == 5
