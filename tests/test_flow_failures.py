"""Devices that misbehave fail alone, with a reason, and get no certificate."""

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

from keyfab.errors import ProvisionError
from keyfab.provision import batch, create_batch, run_batch
from keyfab.rot import KeyAlgorithm, KeySpec, RootOfTrust
from keyfab.rot.soft import SoftRootOfTrust
from keyfab.workspace import Workspace

from .conftest import RECIPE

MEMORY_RECIPE = RECIPE.replace('path = "{home}/devices/{batch}/{slot:06d}"\n', "")


class LyingDevice(SoftRootOfTrust):
    """A device whose key signs something other than what it is asked to."""

    def generate_key(self, label: str, spec: KeySpec) -> Any:
        key = super().generate_key(label, spec)
        honest = key._sign_digest  # type: ignore[union-attr]

        def lie(digest: bytes, algorithm: hashes.HashAlgorithm, *rest: Any) -> bytes:
            return honest(bytes(len(digest)), algorithm, *rest)  # type: ignore[no-any-return]

        key._sign_digest = lie  # type: ignore[union-attr]
        return key


def _devices(home: Path) -> dict[int, tuple[str, int]]:
    with sqlite3.connect(home / "keyfab.db") as db:
        rows = db.execute(
            "SELECT d.slot, d.state, (SELECT count(*) FROM certificates c WHERE c.device_id = d.id)"
            " FROM devices d"
        ).fetchall()
    return {slot: (state, certs) for slot, state, certs in rows}


def test_lying_device_fails_alone(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def opener(driver: str, options: Any, slot: int, batch_name: str, home: str) -> RootOfTrust:
        return LyingDevice(None) if slot == 2 else SoftRootOfTrust(None)

    monkeypatch.setattr(batch, "open_device", opener)
    create_batch(workspace, MEMORY_RECIPE, tmp_path, "b", 5)
    summary = run_batch(workspace, "b")
    assert (summary.provisioned, summary.failed) == (4, 1)
    assert "CSR signature does not verify" in summary.failures[0][1]
    devices = _devices(workspace.home)
    assert devices[2] == ("failed", 0)
    assert all(devices[slot] == ("provisioned", 1) for slot in (0, 1, 3, 4))
    with sqlite3.connect(workspace.home / "keyfab.db") as db:
        reasons = db.execute(
            "SELECT data FROM audit_events WHERE kind = 'device.failed'"
        ).fetchall()
    assert len(reasons) == 1
    assert "CSR signature" in reasons[0][0]


def test_device_holding_a_key_of_another_type_fails(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def opener(driver: str, options: Any, slot: int, batch_name: str, home: str) -> RootOfTrust:
        device = SoftRootOfTrust(None)
        device.generate_key("idevid", KeySpec(KeyAlgorithm.EC_P384))
        return device

    monkeypatch.setattr(batch, "open_device", opener)
    create_batch(workspace, MEMORY_RECIPE, tmp_path, "b", 1)
    summary = run_batch(workspace, "b")
    assert summary.failed == 1
    assert "of another type" in summary.failures[0][1]
    assert _devices(workspace.home)[0] == ("failed", 0)


def test_resume_after_a_crash_between_record_and_write_back(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Certificates recorded but never written: resume writes them, issues nothing new."""
    create_batch(workspace, RECIPE, tmp_path, "b", 4)

    def crash(self: batch.Station, *args: Any) -> int:
        raise ProvisionError("simulated crash after recording")

    monkeypatch.setattr(batch.Station, "_write_back", crash)
    with pytest.raises(ProvisionError):
        run_batch(workspace, "b")
    assert {state for state, _ in _devices(workspace.home).values()} == {"issued"}
    monkeypatch.undo()
    summary = run_batch(workspace, "b")
    assert summary.provisioned == 4
    assert all(v == ("provisioned", 1) for v in _devices(workspace.home).values())
    with sqlite3.connect(workspace.home / "keyfab.db") as db:
        assert (
            db.execute(
                "SELECT count(*) FROM audit_events WHERE kind='certificate.issued'"
            ).fetchone()[0]
            == 4
        )


def test_failed_device_says_why_in_list_show_and_json(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reason is on the device row: the CLI table, --json and show carry it."""
    from .conftest import Keyfab

    def opener(driver: str, options: Any, slot: int, batch_name: str, home: str) -> RootOfTrust:
        return LyingDevice(None) if slot == 1 else SoftRootOfTrust(None)

    monkeypatch.setattr(batch, "open_device", opener)
    create_batch(workspace, MEMORY_RECIPE, tmp_path, "b", 3)
    run_batch(workspace, "b")
    keyfab = Keyfab(workspace.home)
    code, out, _ = keyfab("devices", "list", "--state", "failed", "--json")
    assert code == 0
    listed = json.loads(out)
    assert len(listed) == 1
    assert "CSR signature does not verify" in listed[0]["failure"]
    serial = listed[0]["serial"]
    shown = json.loads(keyfab("devices", "show", serial, "--json")[1])
    assert shown["failure"] == listed[0]["failure"]
    assert "CSR signature" in keyfab("devices", "show", serial)[1]
    assert "CSR signature" in keyfab("devices", "list", "--state", "failed")[1]
    ok = json.loads(keyfab("devices", "list", "--state", "provisioned", "--json")[1])
    assert [d["failure"] for d in ok] == [None, None]


def test_unwritten_device_says_why_and_resume_clears_it(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write-back leaves the device issued with its reason; resume clears it."""
    real = batch.write_back

    def broken(*args: Any) -> None:
        raise ProvisionError("the device did not answer")

    monkeypatch.setattr(batch, "open_device", lambda *a: SoftRootOfTrust(None))
    monkeypatch.setattr(batch, "write_back", broken)
    create_batch(workspace, MEMORY_RECIPE, tmp_path, "b", 2)
    run_batch(workspace, "b")
    with sqlite3.connect(workspace.home / "keyfab.db") as db:
        rows = db.execute("SELECT state, failure FROM devices").fetchall()
    assert rows == [("issued", "write-back failed: the device did not answer")] * 2
    monkeypatch.setattr(batch, "write_back", real)
    run_batch(workspace, "b")
    with sqlite3.connect(workspace.home / "keyfab.db") as db:
        rows = db.execute("SELECT state, failure FROM devices").fetchall()
    assert rows == [("provisioned", None)] * 2
