"""Attack: provision a device identity the registry already holds.

Two batches over the same soft device directories give the second batch's
slots the unique ids of the first's devices. Before the check, the unique
index raised a raw IntegrityError that rolled back a chunk whose certificates
were already signed, and ``keyfab provision resume`` failed forever. Now each
such device fails with its reason, the rest of the batch is provisioned, and
the batch finishes.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from keyfab.provision import create_batch, run_batch
from keyfab.registry import queries
from keyfab.workspace import Workspace
from tests.conftest import RECIPE, Keyfab

if TYPE_CHECKING:
    from keyfab.registry.queries import Holder

SHARED = RECIPE.replace("{home}/devices/{batch}/{slot:06d}", "{home}/devices/shared/{slot:06d}")
ONE_DEVICE = RECIPE.replace("{home}/devices/{batch}/{slot:06d}", "{home}/devices/one")
REGISTERED = re.compile(r"device unique id [0-9a-f]{32} is already registered as AGW-\d{8}")


def _batch(workspace: Workspace, recipe: str, name: str, count: int) -> tuple[int, dict[str, str]]:
    create_batch(workspace, recipe, workspace.home, name, count)
    summary = run_batch(workspace, name)
    return summary.provisioned, dict(summary.failures)


def _scalar(home: Path, sql: str) -> int:
    with sqlite3.connect(home / "keyfab.db") as db:
        return int(db.execute(sql).fetchone()[0])


def _failed(home: Path, batch: str) -> list[dict[str, object]]:
    code, out, err = Keyfab(home)("devices", "list", "--state", "failed", "--json")
    assert code == 0, err
    return [row for row in json.loads(out) if row["batch"] == batch]


def _check_consistent(home: Path, batch: str) -> None:
    """Certificates only for provisioned devices, the audit chain intact, resume a no-op."""
    provisioned = _scalar(home, "SELECT count(*) FROM devices WHERE state = 'provisioned'")
    assert _scalar(home, "SELECT count(*) FROM certificates") == provisioned
    assert _scalar(home, "SELECT count(*) FROM devices WHERE state IN ('pending', 'issued')") == 0
    finished = f"SELECT count(*) FROM batches WHERE name = '{batch}' AND state = 'finished'"
    assert _scalar(home, finished) == 1
    code, out, err = Keyfab(home)("provision", "resume", batch, "--json")
    summary = json.loads(out)  # exit 1 only because the batch has failed devices
    assert (code, summary["failures"]) == (1, []), err
    assert f"{summary['failed']} device(s) failed in batch {batch}" in err
    assert _scalar(home, "SELECT count(*) FROM certificates") == provisioned
    assert Keyfab(home)("audit", "verify")[0] == 0


def test_second_batch_over_the_same_devices(workspace: Workspace) -> None:
    assert _batch(workspace, SHARED, "first", 3) == (3, {})
    provisioned, failures = _batch(workspace, SHARED, "second", 4)
    assert provisioned == 1, failures  # slot 3 is a new device
    assert len(failures) == 3
    for reason in failures.values():
        assert REGISTERED.fullmatch(reason), reason
    failed = _failed(workspace.home, "second")
    assert {row["serial"] for row in failed} == set(failures)
    _check_consistent(workspace.home, "second")


def test_two_slots_of_one_chunk_on_one_device(workspace: Workspace) -> None:
    provisioned, failures = _batch(workspace, ONE_DEVICE, "one", 3)
    assert provisioned == 1
    assert len(failures) == 2
    for reason in failures.values():
        assert re.fullmatch(
            r"device unique id \w+ is already used by AGW-\d{8} in this batch", reason
        )
    assert len(_failed(workspace.home, "one")) == 2
    _check_consistent(workspace.home, "one")


def test_a_station_that_registers_the_id_meanwhile(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check saw nothing (another station won the race): the unique index still
    stops it, and the chunk records its other devices instead of rolling back."""
    assert _batch(workspace, SHARED, "first", 2) == (2, {})
    real = queries.unique_id_holders
    calls: list[int] = []

    def late(registry: object, unique_ids: Iterable[str]) -> Mapping[str, Holder]:
        calls.append(1)
        return {} if len(calls) == 1 else real(registry, unique_ids)  # type: ignore[arg-type]

    monkeypatch.setattr(queries, "unique_id_holders", late)
    provisioned, failures = _batch(workspace, SHARED, "second", 3)
    assert (provisioned, len(failures)) == (1, 2)
    assert all(REGISTERED.fullmatch(reason) for reason in failures.values())
    _check_consistent(workspace.home, "second")
