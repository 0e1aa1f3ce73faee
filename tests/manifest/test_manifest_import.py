"""Import: verified entries become pre-provisioned devices, idempotently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from keyfab.cli.manifest import app
from keyfab.registry import AuditEvent, Certificate, Device
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

from .conftest import SAMPLE, Pki
from .test_manifest_verify import microchip_policy

runner = CliRunner()


@pytest.fixture
def space(keyfab: Keyfab, home: Path) -> Workspace:
    assert keyfab("init", "--org", "Acme")[0] == 0
    return Workspace(home)


def _roots_dir(tmp_path: Path, microchip: Path) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    folder = tmp_path / "roots"
    folder.mkdir(exist_ok=True)
    for n, cert in enumerate(microchip_policy(microchip).roots):
        (folder / f"anchor{n}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    return folder


def _import(space: Workspace, manifest: Path, signers: Path, roots: Path) -> tuple[int, str, str]:
    result = runner.invoke(
        app,
        ["import", str(manifest), "--signers", str(signers), "--roots", str(roots), "--json"],
        obj=space,
    )
    return result.exit_code, result.stdout, result.stderr


def _outcomes(stdout: str) -> list[str]:
    return [json.loads(line)["outcome"] for line in stdout.splitlines()]


def _count(
    space: Workspace,
    table: type[Device] | type[Certificate] | type[AuditEvent],
) -> int:
    registry = space.registry()
    try:
        with registry.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(table)) or 0)
    finally:
        registry.dispose()


def test_manifest_import_real_sample_twice(
    space: Workspace, keyfab: Keyfab, microchip: Path, tmp_path: Path
) -> None:
    roots = _roots_dir(tmp_path, microchip)
    code, out, err = _import(space, SAMPLE, microchip, roots)
    assert code == 0, err
    assert _outcomes(out) == ["imported", "imported"]
    devices = json.loads(keyfab("devices", "list", "--state", "pre-provisioned", "--json")[1])
    assert [d["unique_id"] for d in devices] == ["01230390b3d1450c01", "0123d26e26e688c901"]
    assert devices[0]["serial"] == "se-01230390b3d1450c01"
    shown = json.loads(keyfab("devices", "show", "se-01230390b3d1450c01", "--json")[1])
    assert shown["certificates"][0]["profile"] == "vendor"

    code, out, _ = _import(space, SAMPLE, microchip, roots)
    assert code == 0
    assert _outcomes(out) == ["already-present", "already-present"]
    assert _count(space, Device) == 2
    assert _count(space, Certificate) == 2


def test_manifest_import_bad_entry_skipped_good_kept(
    space: Workspace, pki: Pki, tmp_path: Path
) -> None:
    manifest = pki.write(tmp_path / "m.json", 3)
    raw = json.loads(manifest.read_bytes())
    raw[1]["signature"] = raw[0]["signature"]
    manifest.write_text(json.dumps(raw))
    code, out, err = _import(space, manifest, pki.signers_dir(tmp_path), pki.roots_file(tmp_path))
    assert code == 1
    assert _outcomes(out) == ["imported", "rejected", "imported"]
    assert f"error: entry 1 ({raw[1]['header']['uniqueId']}): signature does not verify" in err
    assert _count(space, Device) == 2


def test_manifest_import_truncated_file_imports_nothing(
    space: Workspace, pki: Pki, tmp_path: Path
) -> None:
    manifest = pki.write(tmp_path / "m.json", 3)
    manifest.write_bytes(manifest.read_bytes()[:-40])
    events = _count(space, AuditEvent)
    code, _, err = _import(space, manifest, pki.signers_dir(tmp_path), pki.roots_file(tmp_path))
    assert code == 1
    assert "manifest ends before its JSON array is closed" in err
    assert _count(space, Device) == 0
    assert _count(space, AuditEvent) == events


def test_manifest_import_conflicting_key_is_rejected(
    space: Workspace, pki: Pki, tmp_path: Path
) -> None:
    first = pki.write(tmp_path / "a.json", 2)
    signers, roots = pki.signers_dir(tmp_path), pki.roots_file(tmp_path)
    assert _import(space, first, signers, roots)[0] == 0
    second = pki.write(tmp_path / "b.json", 3)  # same uniqueIds, new keys
    code, out, err = _import(space, second, signers, roots)
    assert code == 1
    assert _outcomes(out) == ["rejected", "rejected", "imported"]
    assert "uniqueId already in the registry with a different key" in err
    assert _count(space, Device) == 3


def test_manifest_import_duplicate_in_file(space: Workspace, pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 2)
    raw = json.loads(manifest.read_bytes())
    manifest.write_text(json.dumps([raw[0], raw[1], raw[0]]))
    code, out, _ = _import(space, manifest, pki.signers_dir(tmp_path), pki.roots_file(tmp_path))
    assert code == 1
    assert _outcomes(out) == ["imported", "imported", "rejected"]
