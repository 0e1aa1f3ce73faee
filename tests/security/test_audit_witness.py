"""The audit log's tail and its witnesses: attacks by someone who can write the database.

Each attack test plays the attacker on the SQLite registry directly (delete
rows, move ``audit_head``, recompute links with ``keyfab.audit.log.link_hash``)
and then runs the real ``keyfab audit verify``. Before signed checkpoints were
witnessed outside the database, every one of them verified as intact.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from keyfab import audit
from keyfab.authority import Authority
from keyfab.clock import utc_now
from keyfab.errors import AuditError
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

_STORED = "%Y-%m-%d %H:%M:%S.%f"  # how SQLite holds audit_events.at


@pytest.fixture
def provisioned(keyfab: Keyfab, recipe_file: Path, home: Path) -> Path:
    """A workspace with one finished batch of two devices (so one witnessed checkpoint)."""
    assert keyfab("init")[0] == 0
    assert keyfab("provision", "-r", str(recipe_file), "-n", "2", "-b", "b1")[0] == 0
    return home


@pytest.fixture
def signer(keyfab: Keyfab, tmp_path: Path) -> Path:
    """The manufacturing CA certificate, as an auditor would hold it out of band."""
    path = tmp_path / "ca.pem"
    path.write_text(keyfab("ca", "show", "--pem")[1])
    return path


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "keyfab.db")


def _head(home: Path) -> int:
    with _db(home) as db:
        return int(db.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0])


def _witnesses(home: Path) -> list[Path]:
    return sorted((home / "witness").glob("checkpoint-*.json"))


def _cut_tail(home: Path, keep: int) -> None:
    """Delete every event after ``keep`` and move the head back to it."""
    with _db(home) as db:
        db.execute("DELETE FROM audit_events WHERE seq > ?", (keep,))
        (digest,) = db.execute("SELECT hash FROM audit_events WHERE seq = ?", (keep,)).fetchone()
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (keep, digest))


def _unrevoke(home: Path, serial: str) -> None:
    """Undo a device revocation in the tables themselves."""
    with _db(home) as db:
        (device_id,) = db.execute("SELECT id FROM devices WHERE serial = ?", (serial,)).fetchone()
        db.execute("UPDATE devices SET state = 'provisioned' WHERE id = ?", (device_id,))
        db.execute(
            "UPDATE certificates SET revoked_at = NULL, revocation_reason = NULL "
            "WHERE device_id = ?",
            (device_id,),
        )


def _forge(home: Path, kind: str, subject: str, data: dict[str, object]) -> int:
    """Append one correctly linked event and move the head onto it; its seq."""
    moment = utc_now()
    body = audit.canonical_json(data)
    with _db(home) as db:
        seq, prev = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        seq += 1
        digest = audit.log.link_hash(prev, seq, moment, kind, subject, body)
        db.execute(
            "INSERT INTO audit_events (seq, at, kind, subject, data, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, moment.strftime(_STORED), kind, subject, body, prev, digest),
        )
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, digest))
    return int(seq)


def _rebuild_without(home: Path, *kinds: str) -> None:
    """Delete every event of ``kinds``, renumber the rest, recompute every link and the head."""
    with _db(home) as db:
        rows = [
            row
            for row in db.execute("SELECT at, kind, subject, data FROM audit_events ORDER BY seq")
            if row[1] not in kinds
        ]
        db.execute("DELETE FROM audit_events")
        prev = audit.GENESIS
        for seq, (at, kind, subject, data) in enumerate(rows, start=1):
            moment = datetime.datetime.fromisoformat(at).replace(tzinfo=datetime.UTC)
            digest = audit.log.link_hash(prev, seq, moment, kind, subject, data)
            db.execute(
                "INSERT INTO audit_events (seq, at, kind, subject, data, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, at, kind, subject, data, prev, digest),
            )
            prev = digest
        db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (len(rows), prev))


def _serial(keyfab: Keyfab) -> str:
    return str(json.loads(keyfab("devices", "list", "--json")[1])[0]["serial"])


def _unwitnessed_events(keyfab: Keyfab, where: Path, count: int) -> None:
    """Legitimate events of kinds no checkpoint follows (manifest signers: two events each)."""
    for number in range(count):
        key, out = f"soft:{where / f'signer-{number}.pem'}", str(where / f"signer-{number}.crt")
        assert keyfab("manifest", "signer", "--key", key, "--new", "--out", out)[0] == 0


def _intact(keyfab: Keyfab, signer: Path) -> None:
    """The control: the untouched log verifies, with the signer and without."""
    assert keyfab("audit", "verify")[0] == 0
    code, out, err = keyfab("audit", "verify", "--signer", str(signer), "--json")
    assert code == 0, err
    assert json.loads(out)["witnessed_seq"] is not None


# The five attacks.


def test_tail_cut_after_the_last_checkpoint_is_caught(
    keyfab: Keyfab, provisioned: Path, signer: Path
) -> None:
    """Deleting a revocation (and moving the head back) must not silently un-revoke."""
    before = _head(provisioned)
    serial = _serial(keyfab)
    assert keyfab("devices", "revoke", serial, "--reason", "keyCompromise")[0] == 0
    _intact(keyfab, signer)
    _cut_tail(provisioned, before)
    _unrevoke(provisioned, serial)
    code, _, err = keyfab("audit", "verify", "--signer", str(signer))
    assert code == 1
    assert "tail was cut" in err


def test_tail_cut_before_the_last_checkpoint_is_caught(
    keyfab: Keyfab, provisioned: Path, signer: Path
) -> None:
    """Cutting back past the newest checkpoint, deleting it too, leaves older ones valid."""
    serial = _serial(keyfab)
    assert keyfab("audit", "checkpoint")[0] == 0
    before = _head(provisioned)  # the older checkpoint stays in the log
    assert keyfab("devices", "revoke", serial, "--reason", "keyCompromise")[0] == 0
    assert keyfab("audit", "checkpoint")[0] == 0
    _intact(keyfab, signer)
    _cut_tail(provisioned, before)
    _unrevoke(provisioned, serial)
    code, out, err = keyfab("audit", "verify", "--signer", str(signer), "--json")
    assert code == 1
    assert "tail was cut" in err
    report = json.loads(out)
    assert (report["ok"], report["checkpoints"]) == (False, 2)  # the older ones are no pass


def test_forged_event_appended_after_the_last_checkpoint_is_caught(
    keyfab: Keyfab, provisioned: Path, signer: Path
) -> None:
    """A correctly linked ``token.created`` for an admin, with the head moved onto it."""
    _intact(keyfab, signer)
    seq = _forge(
        provisioned,
        "token.created",
        "mallory",
        {"id": "00" * 8, "role": "admin", "uses": None, "device": None},
    )
    assert keyfab("audit", "verify")[0] == 1  # the default mode reads the witnesses too
    code, _, err = keyfab("audit", "verify", "--signer", str(signer))
    assert code == 1
    assert f"event {seq} (token.created)" in err
    assert "forged" in err


def test_checkpoints_deleted_and_chain_rebuilt_is_caught(
    keyfab: Keyfab, provisioned: Path, signer: Path, tmp_path: Path
) -> None:
    """Every checkpoint event and a revocation gone, every link recomputed: the chain is fooled."""
    serial = _serial(keyfab)
    assert keyfab("devices", "revoke", serial, "--reason", "keyCompromise")[0] == 0
    _unwitnessed_events(keyfab, tmp_path, 3)  # so the witnessed seq outlives the deletions
    _intact(keyfab, signer)
    kept = tmp_path / "kept.json"  # a copy the auditor took earlier
    kept.write_bytes(_witnesses(provisioned)[-1].read_bytes())
    _rebuild_without(provisioned, "audit.checkpoint", "device.revoked")
    _unrevoke(provisioned, serial)
    with _db(provisioned) as db:  # the witnesses are gone from the log itself
        assert db.execute("SELECT count(*) FROM audit_events WHERE kind = 'audit.checkpoint'")
    code, _, err = keyfab("audit", "verify", "--signer", str(signer))
    assert code == 1
    assert "the chain was rebuilt" in err
    code, _, err = keyfab("audit", "verify", "--checkpoint", str(kept))
    assert code == 1
    assert "the chain was rebuilt" in err


def test_checkpoint_events_deleted_alone_are_caught(
    keyfab: Keyfab, provisioned: Path, signer: Path, tmp_path: Path
) -> None:
    """Dropping only the checkpoint events keeps every witnessed head, not their events."""
    _unwitnessed_events(keyfab, tmp_path, 2)
    _intact(keyfab, signer)
    _rebuild_without(provisioned, "audit.checkpoint")
    code, _, err = keyfab("audit", "verify", "--signer", str(signer))
    assert code == 1
    assert "is not the checkpoint" in err


def test_zero_checkpoints_with_a_signer_is_not_intact(
    keyfab: Keyfab, workspace: Workspace, signer: Path, tmp_path: Path
) -> None:
    """``--signer`` asks for signatures: a log with none of them fails, naming why."""
    assert keyfab("ca", "crl", "--out", str(tmp_path / "crl.pem"))[0] == 0
    code, out, err = keyfab("audit", "verify", "--signer", str(signer), "--json")
    assert code == 1
    assert "no witnessed checkpoint" in err
    assert json.loads(out)["checkpoints"] == 0
    code, out, _ = keyfab("audit", "verify")  # without a signer: passes, saying what it lacks
    assert code == 0
    assert "not proven" in out
    assert "no witnessed checkpoint" in " ".join(out.split())


# The witness files themselves.


def test_witness_file_is_private_and_never_overwritten(keyfab: Keyfab, home: Path) -> None:
    keyfab("init")
    assert keyfab("audit", "checkpoint")[0] == 0
    (path,) = _witnesses(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.name == audit.witness.file_name(_head(home) - 1)
    original = path.read_bytes()
    point = audit.witness.read(path).point
    forged = audit.SignedHead(point.seq, "f" * 64, point.signature, point.certificate)
    with pytest.raises(AuditError, match="never rewritten"):
        audit.witness.write(path.parent, forged)
    assert path.read_bytes() == original
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def _checkpoint_then_fail(authority: Authority) -> None:
    with authority.transaction() as session:
        authority.checkpoint(session)
        raise RuntimeError("the change this checkpoint belonged to failed")


def test_rolled_back_transaction_leaves_no_witness(workspace: Workspace, home: Path) -> None:
    with Authority.open(workspace) as authority:
        with pytest.raises(RuntimeError, match="belonged to failed"):
            _checkpoint_then_fail(authority)
        assert _witnesses(home) == []
        with authority.transaction() as session:
            authority.checkpoint(session)
            assert _witnesses(home) == []  # not before the commit either
    assert len(_witnesses(home)) == 1


def test_tampered_checkpoint_file_fails_on_its_signature(
    keyfab: Keyfab, provisioned: Path, tmp_path: Path
) -> None:
    (original,) = _witnesses(provisioned)
    data = json.loads(original.read_text())
    with _db(provisioned) as db:  # claim an older head: a real hash, but not what was signed
        (older,) = db.execute("SELECT hash FROM audit_events WHERE seq = 3").fetchone()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**data, "seq": 3, "head": older}))
    code, _, err = keyfab("audit", "verify", "--checkpoint", str(tampered))
    assert code == 1
    assert "bad signature" in err
    assert keyfab("audit", "verify", "--checkpoint", str(original))[0] == 0


def test_every_grant_and_revocation_is_witnessed(
    keyfab: Keyfab, provisioned: Path, tmp_path: Path
) -> None:
    """Each witnessed kind is followed by a checkpoint whose witness covers it."""
    serial = _serial(keyfab)
    actions = [
        ("tokens", "create", "ops", "--role", "operator"),
        ("tokens", "revoke", "ops"),
        ("stations", "issue", "line-1", "--out", str(tmp_path)),
        ("stations", "revoke", "line-1"),
        ("devices", "revoke", serial),
    ]
    for action in actions:
        assert keyfab(*action)[0] == 0, action
        witnessed = audit.witness.read(_witnesses(provisioned)[-1]).point.seq
        assert witnessed == _head(provisioned) - 1, action  # the newest checkpoint covers it
    count = len(_witnesses(provisioned))
    assert keyfab("devices", "revoke", serial)[0] == 0  # nothing changed: nothing to witness
    assert len(_witnesses(provisioned)) == count
    assert keyfab("audit", "verify")[0] == 0


def test_witness_directory_is_chosen_by_the_environment(
    keyfab: Keyfab, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv(audit.witness.ENVIRONMENT, str(elsewhere))
    keyfab("init")
    assert keyfab("audit", "checkpoint")[0] == 0
    assert len(list(elsewhere.glob("checkpoint-*.json"))) == 1
    assert not (home / "witness").exists()
    code, out, _ = keyfab("audit", "verify", "--json")
    assert code == 0
    assert json.loads(out)["witness_source"].startswith(str(elsewhere) + os.sep)


def test_witness_that_cannot_be_written_is_an_error_and_verify_says_so(
    keyfab: Keyfab, home: Path
) -> None:
    keyfab("init")
    (home / "witness").write_text("a file where the directory should be")
    code, _, err = keyfab("audit", "checkpoint")
    assert code == 1
    assert "could not be written" in err
    assert _head(home) == 3  # the checkpoint event committed before its witness was tried
    (home / "witness").unlink()
    code, out, _ = keyfab("audit", "verify")
    assert code == 0
    assert "not proven" in out
