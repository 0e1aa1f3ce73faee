"""A real ``keyfab provision`` process killed with SIGKILL mid-batch, then resumed."""

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from cryptography import x509

from keyfab.rot.soft import SoftRootOfTrust
from keyfab.workspace import Workspace

from .conftest import Keyfab, keyfab_process

COUNT = 600


def _provisioned(db: Path) -> int:
    with sqlite3.connect(db, timeout=30) as connection:
        return int(
            connection.execute(
                "SELECT count(*) FROM devices WHERE state = 'provisioned'"
            ).fetchone()[0]
        )


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume(workspace: Workspace, recipe_file: Path) -> None:
    home = workspace.home
    process = keyfab_process(
        home,
        "provision",
        "-r",
        str(recipe_file),
        "-n",
        str(COUNT),
        "-w",
        "2",
        "-b",
        "k",
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _provisioned(home / "keyfab.db") < 60:  # poll the registry, bounded
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _provisioned(home / "keyfab.db") < COUNT, "killed too late to test anything"

    code, out, err = Keyfab(home)("provision", "resume", "k", "--workers", "2", "--json")
    assert code == 0, (err, out)
    assert json.loads(out)["provisioned"] == COUNT

    with sqlite3.connect(home / "keyfab.db") as db:
        states = dict(db.execute("SELECT state, count(*) FROM devices GROUP BY state").fetchall())
        assert states == {"provisioned": COUNT}
        certs = db.execute("SELECT device_id, serial_number, der FROM certificates").fetchall()
        assert len(certs) == COUNT, "one certificate per device, no more"
        assert len({c[1] for c in certs}) == COUNT
        serials = [r[0] for r in db.execute("SELECT serial FROM devices")]
        assert len(set(serials)) == COUNT
        slots = sorted(r[0] for r in db.execute("SELECT slot FROM devices"))
        assert slots == list(range(COUNT))
        recorded = {bytes(c[2]) for c in certs}
        issued_events = db.execute(
            "SELECT count(*) FROM audit_events WHERE kind='certificate.issued'"
        ).fetchone()[0]
        assert issued_events == COUNT

    devices = sorted((home / "devices" / "k").iterdir())
    assert len(devices) == COUNT
    for path in devices:  # no certificate exists on a device without its registry row
        der = SoftRootOfTrust(path).load_object("idevid-cert")
        assert der in recorded
        x509.load_der_x509_certificate(der)
    residue = [str(p.relative_to(home)) for p in home.rglob("*.tmp")]
    assert not residue, f"a killed writer's temporary files survived the resume: {residue}"
    assert Keyfab(home)("audit", "verify")[0] == 0


@pytest.mark.slow
def test_sigint_says_how_far_then_resume(workspace: Workspace, recipe_file: Path) -> None:
    """Ctrl-C (SIGINT to the foreground group) ends with one line and exit 130."""
    home = workspace.home
    process = keyfab_process(
        home, "provision", "-r", str(recipe_file), "-n", str(COUNT), "-w", "2", "-b", "k",
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while _provisioned(home / "keyfab.db") < 60:  # poll the registry, bounded
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    done = _provisioned(home / "keyfab.db")
    assert done < COUNT, "interrupted too late to test anything"
    last = err.strip().splitlines()[-1]
    assert last == (
        f"interrupted: {done:,} of {COUNT:,} provisioned; finish with 'keyfab provision resume k'"
    )
    assert "Traceback" not in err

    code, out, err = Keyfab(home)("provision", "resume", "k", "--workers", "2", "--json")
    assert code == 0, (err, out)
    assert json.loads(out)["provisioned"] == COUNT
    with sqlite3.connect(home / "keyfab.db") as db:
        assert db.execute("SELECT state, count(*) FROM devices GROUP BY state").fetchall() == [
            ("provisioned", COUNT)
        ]
        certs = db.execute("SELECT count(DISTINCT device_id), count(*) FROM certificates")
        assert certs.fetchone() == (COUNT, COUNT), "one certificate per device, no more"
    assert Keyfab(home)("audit", "verify")[0] == 0
