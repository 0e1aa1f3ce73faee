"""Batches as a noun: list, show, cancel; and the tables that show them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from keyfab.provision import create_batch, run_batch
from keyfab.workspace import Workspace

from .conftest import RECIPE, Keyfab, batch_states

LONG = "line1-shift1-acme-gateway-20261209T101010Z"


def test_batches_list_and_show(workspace: Workspace, tmp_path: Path) -> None:
    create_batch(workspace, RECIPE, tmp_path, "done", 3)
    run_batch(workspace, "done")
    create_batch(workspace, RECIPE, tmp_path, "waiting", 2)
    keyfab = Keyfab(workspace.home)
    code, out, _ = keyfab("batches", "list", "--json")
    assert code == 0
    listed = {b["name"]: b for b in json.loads(out)}
    assert listed["done"]["state"] == "finished"
    assert (listed["done"]["provisioned"], listed["done"]["pending"]) == (3, 0)
    assert listed["done"]["devices_per_second"] > 0
    assert listed["done"]["product"] == "acme-gateway"
    assert (listed["waiting"]["pending"], listed["waiting"]["devices_per_second"]) == (2, None)
    shown = json.loads(keyfab("batches", "show", "waiting", "--json")[1])
    assert shown == listed["waiting"]
    assert "waiting" in keyfab("batches", "list")[1]
    code, _, err = keyfab("batches", "show", "nope")
    assert code == 1
    assert "no batch named 'nope'" in err


def test_cancel_releases_pending_and_resume_is_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    create_batch(workspace, RECIPE, tmp_path, "c", 4)
    with sqlite3.connect(workspace.home / "keyfab.db") as db:  # as a crash would leave one
        db.execute("UPDATE devices SET state = 'issued' WHERE slot = 0")
    keyfab = Keyfab(workspace.home)
    code, out, err = keyfab("batches", "cancel", "c")
    assert code == 0, err
    assert "3 pending device(s) released, 1 issued" in out
    assert batch_states(workspace.home, "c") == {"cancelled": 3, "issued": 1}
    assert json.loads(keyfab("batches", "show", "c", "--json")[1])["state"] == "cancelled"
    code, out, _ = keyfab("batches", "cancel", "c")
    assert (code, "nothing changed" in out) == (0, True)
    code, _, err = keyfab("provision", "resume", "c")
    assert code == 1
    assert err.strip() == "error: batch 'c' is cancelled: it cannot be resumed"
    with sqlite3.connect(workspace.home / "keyfab.db") as db:
        events = db.execute(
            "SELECT count(*) FROM audit_events WHERE kind = 'batch.cancelled'"
        ).fetchone()[0]
    assert events == 1
    assert keyfab("audit", "verify")[0] == 0


def test_cancel_a_finished_batch_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    create_batch(workspace, RECIPE, tmp_path, "f", 1)
    run_batch(workspace, "f")
    code, _, err = Keyfab(workspace.home)("batches", "cancel", "f")
    assert code == 1
    assert "batch 'f' is finished" in err


def test_tables_show_totals_and_whole_identifiers(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a 60-column terminal a batch name is printed whole; a cut listing says so."""
    monkeypatch.setenv("COLUMNS", "60")
    from keyfab.cli import _output

    monkeypatch.setattr(_output.console, "_width", 60)
    create_batch(workspace, RECIPE, tmp_path, LONG, 5)
    keyfab = Keyfab(workspace.home)
    code, out, _ = keyfab("devices", "list", "--limit", "2", "--after", "AGW-00000001")
    assert code == 0
    assert "devices (2 shown)" in out
    assert LONG in out
    assert "AGW-00000002" in out
    assert "AGW-00000001" not in out
    cursor = out.split("more: --cursor ")[1].split()[0]
    code, out, _ = keyfab("devices", "list", "--limit", "2", "--cursor", cursor)
    assert "AGW-00000004" in out
    assert "more:" not in out
    assert LONG in keyfab("batches", "list")[1]
    assert "more:" not in keyfab("devices", "list")[1]


def test_device_pages_follow_cursors_and_refuse_offsets(
    workspace: Workspace, tmp_path: Path
) -> None:
    create_batch(workspace, RECIPE, tmp_path, "pg", 5)
    keyfab = Keyfab(workspace.home)
    code, out, err = keyfab("devices", "list", "--batch", "pg", "--limit", "3", "--json")
    assert code == 0
    first = [d["serial"] for d in json.loads(out)]
    cursor = err.split("more: --cursor ")[1].split()[0]
    _, out, err = keyfab(
        "devices", "list", "-b", "pg", "--limit", "3", "--cursor", cursor, "--json"
    )
    second = [d["serial"] for d in json.loads(out)]
    assert len(first) == 3
    assert len(second) == 2
    assert not set(first) & set(second)
    assert "more:" not in err
    code, _, err = keyfab("devices", "list", "--state", "failed", "--cursor", cursor)
    assert code == 1
    assert "other filters" in err
    code, _, err = keyfab("devices", "list", "--offset", "1")
    assert code == 1
    assert "--offset was removed" in err
    code, _, err = keyfab("devices", "list", "--cursor", "x" * 80)
    assert code == 1
    assert "not a cursor keyfab made" in err
    code, _, err = keyfab("devices", "list", "--after", "NOPE-1")
    assert code == 1
    assert "no device with serial 'NOPE-1'" in err


def test_subjects_are_readable_new_rows_and_old(workspace: Workspace, tmp_path: Path) -> None:
    """serialNumber, not 2.5.4.5, in the stored row, show, --json; old rows re-rendered."""
    create_batch(workspace, RECIPE, tmp_path, "s", 1)
    run_batch(workspace, "s")
    db_path = workspace.home / "keyfab.db"
    with sqlite3.connect(db_path) as db:
        serial, stored = db.execute(
            "SELECT d.serial, c.subject FROM devices d JOIN certificates c ON c.device_id = d.id"
        ).fetchone()
    expected = f"O=Acme, OU=acme-gateway, CN={serial}, serialNumber={serial}"
    assert stored == expected
    with sqlite3.connect(db_path) as db:  # as keyfab stored it before
        db.execute(f"UPDATE certificates SET subject = '2.5.4.5={serial},CN={serial},O=Acme'")
    keyfab = Keyfab(workspace.home)
    shown = json.loads(keyfab("devices", "show", serial, "--json")[1])
    assert shown["certificates"][0]["subject"] == expected
    assert "2.5.4.5" not in keyfab("devices", "show", serial)[1]


def test_readable_name_escapes_and_shortens() -> None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from keyfab.pki.display import readable_name

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme, Inc."),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "42"),
        ]
    )
    assert readable_name(name) == r"C=DE, O=Acme\, Inc., serialNumber=42"
