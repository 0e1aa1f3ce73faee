"""Fixtures shared by the spine's tests: workspaces, CAs, the CLI runner."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyfab import pki
from keyfab.authority import initialise
from keyfab.rot import KeyAlgorithm, KeySpec
from keyfab.rot.soft import SoftRootOfTrust, SoftRotWarning
from keyfab.workspace import Workspace

RECIPE = """\
[product]
name = "acme-gateway"
organization = "Acme"
hw_type = "1.3.6.1.4.1.99999.1.1"
serial = "AGW-{seq:08d}"

[rot]
driver = "soft"
path = "{home}/devices/{batch}/{slot:06d}"

[[keys]]
label = "idevid"
algorithm = "ec-p256"

[counters]
rollback = 3
"""


@pytest.fixture(autouse=True)
def _quiet_soft_driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("KEYFAB_DATABASE_URL", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        yield


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def workspace(home: Path) -> Workspace:
    space = Workspace(home)
    initialise(space, "Acme")
    return space


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    return path


@pytest.fixture
def ca_pair() -> tuple[pki.CertificateAuthority, pki.CertificateAuthority]:
    """(root, manufacturing) CAs with P-256 keys in memory."""
    rot = SoftRootOfTrust(None)
    root = pki.CertificateAuthority.create_root(
        pki.root_ca("Acme", "Acme Root CA"), rot.generate_key("root", KeySpec(KeyAlgorithm.EC_P256))
    )
    mfg = root.create_subordinate(
        pki.manufacturing_ca("Acme", "Acme Manufacturing CA"),
        rot.generate_key("mfg", KeySpec(KeyAlgorithm.EC_P256)),
    )
    return root, mfg


class Keyfab:
    """Runs the real ``keyfab`` CLI in-process and returns (exit code, stdout, stderr)."""

    def __init__(self, home: Path):
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str) -> tuple[int, str, str]:
        from keyfab.cli import app

        result = self.runner.invoke(app, ["--home", str(self.home), *args], catch_exceptions=True)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            from keyfab.errors import KeyfabError

            if isinstance(result.exception, KeyfabError):
                return 1, result.stdout, str(result.exception)
            raise result.exception
        return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def keyfab(home: Path) -> Keyfab:
    return Keyfab(home)


def keyfab_process(home: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """The real ``keyfab`` executable as a separate process."""
    env = {**os.environ, "KEYFAB_HOME": str(home)}
    exe = Path(sys.executable).with_name("keyfab")
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [str(exe), *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def batch_states(home: Path, batch: str) -> dict[str, int]:
    """How many of a batch's devices are in each state, read straight from the SQLite file."""
    with sqlite3.connect(home / "keyfab.db") as db:
        rows = db.execute(
            "SELECT d.state, count(*) FROM devices d JOIN batches b ON d.batch_id = b.id"
            " WHERE b.name = ? GROUP BY d.state",
            (batch,),
        ).fetchall()
    return dict(rows)
