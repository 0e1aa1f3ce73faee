"""Cancelling a running batch: it stops after its chunk in hand, here or on another station."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from keyfab.errors import ConflictError
from keyfab.provision import Summary, _runs, cancel_batch, create_batch, outstanding, run_batch
from keyfab.provision.batch import CHUNK, Station
from keyfab.workspace import Workspace

from .conftest import RECIPE, batch_states

DEADLINE = 60.0


def _certificates(home: Path, batch: str) -> int:
    with sqlite3.connect(home / "keyfab.db") as db:
        return int(
            db.execute(
                "SELECT count(*) FROM certificates c JOIN devices d ON c.device_id = d.id"
                " JOIN batches b ON d.batch_id = b.id WHERE b.name = ?",
                (batch,),
            ).fetchone()[0]
        )


def test_cancel_stops_a_run_in_this_process_after_its_chunk(
    workspace: Workspace, tmp_path: Path
) -> None:
    count = CHUNK * 4
    create_batch(workspace, RECIPE, tmp_path, "live", count)
    chunk_done = threading.Event()
    summaries: list[Summary] = []

    def progress(_: int) -> None:
        """After the first chunk, hold the run until the cancel has asked it to stop."""
        if not chunk_done.is_set():
            chunk_done.set()
            (run,) = _runs._runs["live"]
            assert run.stop.wait(DEADLINE)

    runner = threading.Thread(
        target=lambda: summaries.append(run_batch(workspace, "live", 1, progress))
    )
    runner.start()
    assert chunk_done.wait(DEADLINE)
    done = cancel_batch(workspace, "live", by="test")
    runner.join(DEADLINE)
    assert (done.changed, done.stopped) == (True, True)
    assert (done.released, done.issued) == (count - CHUNK, 0)
    (summary,) = summaries
    assert (summary.stopped, summary.provisioned) == (True, CHUNK)
    states = batch_states(workspace.home, "live")
    assert states == {"provisioned": CHUNK, "cancelled": count - CHUNK}
    assert _certificates(workspace.home, "live") == CHUNK  # nothing signed past the chunk


def test_a_station_elsewhere_stops_at_its_next_chunk(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process learns of the cancel from the batch's state: before a chunk starts,
    and, if it started before the cancel, in the transaction that would record it."""
    create_batch(workspace, RECIPE, tmp_path, "away", 4)
    ids = outstanding(workspace, "away")
    station = Station(workspace, "away")  # opened while the batch runs
    try:
        assert cancel_batch(workspace, "away", by="test").stopped is False  # no run here
        assert station.run(ids).stopped
        monkeypatch.setattr(Station, "cancelled", lambda self: False)  # it looked too early
        outcome = station.run(ids)
    finally:
        station.close()
    assert (outcome.stopped, outcome.provisioned) == (True, 0)
    assert batch_states(workspace.home, "away") == {"cancelled": 4}
    assert _certificates(workspace.home, "away") == 0  # signed in memory, never recorded


def test_a_run_that_cannot_stop_in_time_is_a_conflict(workspace: Workspace, tmp_path: Path) -> None:
    create_batch(workspace, RECIPE, tmp_path, "busy", 2)
    with _runs.running("busy") as run:  # a run stuck in its chunk
        with pytest.raises(ConflictError, match="did not stop within") as refused:
            cancel_batch(workspace, "busy", by="test", wait=0.01)
        assert refused.value.slug == "batch-running"
        assert run.stop.is_set()  # it was asked: it stops at its next chunk
    assert batch_states(workspace.home, "busy") == {"pending": 2}
    assert cancel_batch(workspace, "busy", by="test").released == 2  # once it has stopped


def test_a_station_cancelled_mid_run_says_so(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'keyfab provision resume' whose batch another station cancels: exit 1, one line."""
    import json

    from .conftest import Keyfab

    create_batch(workspace, RECIPE, tmp_path, "elsewhere", 3)
    monkeypatch.setattr(Station, "cancelled", lambda self: True)  # cancelled as it starts
    code, out, err = Keyfab(workspace.home)("provision", "resume", "elsewhere", "--json")
    assert code == 1
    assert err.strip() == "error: batch elsewhere was cancelled while this station ran it: " + (
        "stopped after the chunk in hand (0 provisioned)"
    )
    assert json.loads(out)["stopped"] is True
    assert batch_states(workspace.home, "elsewhere") == {"pending": 3}  # nothing was touched
