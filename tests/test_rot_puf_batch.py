"""``keyfab provision --backend puf``: N simulated PUF devices, their evidence, drift and resume."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keyfab.errors import ProvisionError
from keyfab.provision import batch, create_batch, run_batch
from keyfab.rot.puf import HELPER_LABEL, STATE_FILE
from keyfab.rot.puf.sources import ModelSource, write_dump
from keyfab.workspace import Workspace

from .conftest import RECIPE, Keyfab

CELLS = 16384
FILES_RECIPE = RECIPE.replace(
    'driver = "soft"', 'driver = "puf"\nsource = "files"\ndumps = "{home}/dumps/{slot}"'
)


def _rows(home: Path) -> dict[int, tuple[str, str | None, str | None]]:
    with sqlite3.connect(home / "keyfab.db") as db:
        rows = db.execute("SELECT slot, state, failure, evidence FROM devices").fetchall()
    return {slot: (state, failure, evidence) for slot, state, failure, evidence in rows}


def _helper_digest(device: Path) -> str:
    stored = json.loads((device / STATE_FILE).read_bytes())["objects"][HELPER_LABEL]
    return hashlib.sha256(base64.b64decode(stored)).hexdigest()


def test_provision_backend_puf_records_the_helper_data_digest(
    keyfab: Keyfab, home: Path, recipe_file: Path
) -> None:
    assert keyfab("init")[0] == 0
    code, out, err = keyfab(
        "provision", "-r", str(recipe_file), "-n", "5", "-b", "p", "--backend", "puf", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["provisioned"] == 5
    for slot, (state, failure, evidence) in _rows(home).items():
        assert (state, failure) == ("provisioned", None)
        assert evidence is not None
        recorded = json.loads(evidence)["enrolment"]
        device = home / "devices" / "p" / f"{slot:06d}"
        assert recorded == {
            "format": "keyfab-puf-v1",
            "helper_data_sha256": _helper_digest(device),
        }
    with sqlite3.connect(home / "keyfab.db") as db:
        assert db.execute("SELECT DISTINCT rot_kind FROM devices").fetchall() == [("puf",)]


def _dumps(home: Path, slot: int, count: int, **conditions: float) -> None:
    directory = home / "dumps" / str(slot)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    model = ModelSource(f"chip-{slot}", CELLS, 0.08, **conditions)
    for n in range(count):
        write_dump(directory / f"{n:04d}.bin", model.dump())


def test_a_drifted_device_fails_with_its_reason_and_the_batch_resumes(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolled, recorded, crashed before write-back; one chip then drifts (hot, old)."""
    home = workspace.home
    for slot in range(4):
        _dumps(home, slot, 8)
    create_batch(workspace, FILES_RECIPE, tmp_path, "b", 4)

    def crash(self: batch.Station, *args: Any) -> int:
        raise ProvisionError("simulated crash after recording")

    monkeypatch.setattr(batch.Station, "_write_back", crash)
    with pytest.raises(ProvisionError):
        run_batch(workspace, "b")
    assert {state for state, _, _ in _rows(home).values()} == {"issued"}
    monkeypatch.undo()

    _dumps(home, 2, 8, temperature=150, age=50)  # the same chip, far from its enrolment
    summary = run_batch(workspace, "b")
    assert (summary.provisioned, summary.failed) == (3, 1)
    rows = _rows(home)
    assert rows[2][0] == "failed"
    assert str(rows[2][1]).startswith("PUF reconstruction failed")
    assert all(rows[slot][:2] == ("provisioned", None) for slot in (0, 1, 3))
    again = run_batch(workspace, "b")  # nothing left: resuming is a no-op, not an error
    assert (again.provisioned, again.failed) == (3, 1)
    with sqlite3.connect(home / "keyfab.db") as db:
        assert db.execute("SELECT state FROM batches").fetchone()[0] == "finished"
        reasons = db.execute("SELECT data FROM audit_events WHERE kind='device.failed'").fetchall()
    assert len(reasons) == 1
    assert "PUF reconstruction failed" in reasons[0][0]
