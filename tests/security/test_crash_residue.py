"""Attack residue: a station killed inside ``write_secret`` leaves a copy of a key behind.

``securefile`` writes a secret to ``.<name>.<8 hex>.tmp`` and links it into
place; a SIGKILL between the two leaves that file (11 of 114 mid-batch kills
did). Resuming the batch opens the device again, and the soft driver sweeps
its directory: those files go, a symlink named like one stays (and its target
is never touched), and nothing else in the directory is removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from keyfab import securefile
from keyfab.provision import create_batch, run_batch
from keyfab.workspace import Workspace
from tests.conftest import RECIPE, Keyfab

STALE = ".idevid.pem.0123abcd.tmp"
STATE = ".rot.json.tmp"  # rot.json's temporary before it went through securefile
LINK = ".idevid.pem.89abcdef.tmp"
OTHERS = ("notes.txt", ".notes.tmp", "idevid.pem.0123abcd.tmp", ".idevid.pem.0123ABCD.tmp")


def _plant(device: Path, victim: Path) -> None:
    device.mkdir(mode=0o700, parents=True)
    for name in (STALE, STATE, *OTHERS):
        (device / name).write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    (device / LINK).symlink_to(victim)


def test_resume_sweeps_what_a_killed_writer_left(workspace: Workspace, tmp_path: Path) -> None:
    home = workspace.home
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    create_batch(workspace, RECIPE, home, "crashed", 2)  # killed before any device: pending
    device = home / "devices" / "crashed" / "000000"
    _plant(device, victim)

    code, _, err = Keyfab(home)("provision", "resume", "crashed")
    assert code == 0, err

    names = set(os.listdir(device))
    assert STALE not in names
    assert STATE not in names
    assert set(OTHERS) <= names, "only the writers' own temporaries are removed"
    assert (device / LINK).is_symlink(), "a symlink is left alone"
    assert victim.read_bytes() == b"not yours", "and never followed"
    assert {"idevid.pem", "rot.json"} <= names


def test_sweep_takes_only_regular_files_of_the_pattern(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    folder = tmp_path / "device"
    _plant(folder, victim)
    (folder / ".dir.01234567.tmp").mkdir()
    assert securefile.sweep_temporaries(folder) == [STALE]
    assert securefile.sweep_temporaries(tmp_path / "missing") == []
    assert victim.read_bytes() == b"not yours"
    assert (folder / ".dir.01234567.tmp").is_dir()


def test_batch_over_swept_devices_leaves_no_temporaries(workspace: Workspace) -> None:
    create_batch(workspace, RECIPE, workspace.home, "clean", 3)
    assert run_batch(workspace, "clean").provisioned == 3
    assert not list(workspace.home.rglob("*.tmp"))
