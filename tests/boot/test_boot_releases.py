"""``keyfab fit sign --product`` records the release U-Boot will measure; migration 0008."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from alembic import command

from keyfab.registry import Registry
from keyfab.registry.db import REVISIONS, _alembic
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

from .conftest import ItsMaker, KeyMaker, run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:keyfab.rot")


def _sign(
    keyfab: Keyfab, image: Path, keydir: KeyMaker, control: Path, *extra: str
) -> tuple[int, str, str]:
    key = f"soft:{keydir('dev', 'rsa2048') / 'dev.pem'}"
    return keyfab(
        "fit",
        "sign",
        str(image),
        "--key",
        key,
        "--key-name-hint",
        "dev",
        "--control",
        str(control),
        "--required",
        "conf",
        *extra,
    )


def test_fit_sign_records_what_uboot_measures(
    workspace: Workspace,
    keyfab: Keyfab,
    make_fit: ItsMaker,
    keydir: KeyMaker,
    control_dtb: Path,
    payloads: Path,
) -> None:
    image = make_fit(extra="rollback-index = <7>;")
    code, out, err = _sign(
        keyfab, image, keydir, control_dtb, "--product", "acme-gateway", "--version", "1.4.2"
    )
    assert code == 0, err
    assert "recorded release 1.4.2 of acme-gateway" in out
    if shutil.which("fit_check_sign"):  # Debian's u-boot-tools does not ship it
        run("fit_check_sign", "-f", image, "-k", control_dtb)
    listing = run("mkimage", "-l", image).stdout
    assert "Sign algo:    sha256,rsa2048:dev" in listing
    assert hashlib.sha256((payloads / "kernel.bin").read_bytes()).hexdigest() in listing
    code, out, _ = keyfab("fit", "releases", "--json")
    [release] = json.loads(out)
    assert release["product"] == "acme-gateway"
    assert release["rollback_index"] == 7  # from the configuration, as fit verify reads it
    measured = release["measurements"]["conf-1"]
    # U-Boot hashes the payload bytes as they sit in the FIT: the files given to mkimage.
    kernel, fdt = (payloads / "kernel.bin").read_bytes(), (payloads / "fdt.dtb").read_bytes()
    assert measured["linux"]["sha256"] == hashlib.sha256(kernel).hexdigest()
    assert measured["linux"]["sha1"] == hashlib.sha1(kernel).hexdigest()
    assert measured["dts"]["sha384"] == hashlib.sha384(fdt).hexdigest()
    assert measured["initrd"]["sha256"] == hashlib.sha256(b"").hexdigest()  # no ramdisk
    with sqlite3.connect(workspace.home / "keyfab.db") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM audit_events ORDER BY seq")]
    assert kinds[-2:] == ["release.recorded", "audit.checkpoint"]


def test_fit_sign_refuses_a_version_twice_before_writing(
    workspace: Workspace, keyfab: Keyfab, make_fit: ItsMaker, keydir: KeyMaker, control_dtb: Path
) -> None:
    image = make_fit()
    args = ("--product", "acme-gateway", "--version", "2.0", "--rollback", "3")
    assert _sign(keyfab, image, keydir, control_dtb, *args)[0] == 0
    second = make_fit("second")
    before = second.read_bytes()
    code, _, err = _sign(keyfab, second, keydir, control_dtb, *args)
    assert (code, err) == (1, "error: release 2.0 of acme-gateway is recorded already\n")
    assert second.read_bytes() == before
    code, out, _ = keyfab("fit", "releases", "--product", "acme-gateway")
    assert code == 0
    assert "2.0" in out
    assert "conf-1" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--product", "acme"), "--product and --version go together"),
        (("--product", "acme", "--version", "1 2"), "--version must be 1 to 64 printable"),
        (("--product", "a b", "--version", "1"), "product"),
        (("--product", "acme", "--version", "1", "--rollback", "-1"), "--rollback must be"),
    ],
)
def test_fit_sign_bad_release_options_are_one_line(
    workspace: Workspace,
    keyfab: Keyfab,
    make_fit: ItsMaker,
    keydir: KeyMaker,
    control_dtb: Path,
    extra: tuple[str, ...],
    message: str,
) -> None:
    image = make_fit()
    before = image.read_bytes()
    code, _, err = _sign(keyfab, image, keydir, control_dtb, *extra)
    assert code == 1
    assert message in err
    assert "\n" not in err.strip()
    assert image.read_bytes() == before


def test_fit_sign_without_product_records_nothing_and_says_so(
    workspace: Workspace, keyfab: Keyfab, make_fit: ItsMaker, keydir: KeyMaker, control_dtb: Path
) -> None:
    code, _, err = _sign(keyfab, make_fit(), keydir, control_dtb)
    assert code == 0
    assert err.count("not recorded as a release (no --product)") == 1
    assert json.loads(keyfab("fit", "releases", "--json")[1]) == []


def test_migration_0008_on_a_registry_with_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    registry = Registry(url)
    with registry.engine.begin() as connection:
        command.upgrade(_alembic(connection), "0007")
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute(
            "INSERT INTO authorities (name, kind, certificate, key_uri, created_at)"
            " VALUES ('root', 'root', x'00', 'soft:k', '2026-01-01 00:00:00.000000')"
        )
    registry.dispose()
    Registry.open(url).dispose()
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert db.execute("SELECT name FROM authorities").fetchall() == [("root",)]
        assert db.execute("SELECT count(*) FROM releases").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM attestation_policies").fetchone() == (0,)
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (REVISIONS[-1],)
    with Registry(url).engine.begin() as connection:
        command.downgrade(_alembic(connection), "0007")
    with sqlite3.connect(tmp_path / "old.db") as db:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "releases" not in tables
    assert "authorities" in tables
