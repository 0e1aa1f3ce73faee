"""The ``keyfab manifest`` commands, run through Typer's runner on real files."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from keyfab.cli.manifest import app

from .conftest import Pki

runner = CliRunner()


def _args(pki: Pki, tmp_path: Path, manifest: Path) -> list[str]:
    return [
        "verify",
        str(manifest),
        "--signers",
        str(pki.signers_dir(tmp_path)),
        "--roots",
        str(pki.roots_file(tmp_path)),
    ]


def test_manifest_cli_verify_ok(pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 3)
    result = runner.invoke(app, _args(pki, tmp_path, manifest))
    assert result.exit_code == 0, result.output
    assert "3 of 3 entries verified" in result.output


def test_manifest_cli_verify_names_failing_entry(pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 3)
    raw = json.loads(manifest.read_bytes())
    raw[1]["signature"] = raw[0]["signature"]
    manifest.write_text(json.dumps(raw))
    result = runner.invoke(app, [*_args(pki, tmp_path, manifest), "--json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["verified"] for line in lines] == [True, False, True]
    assert (
        f"error: entry 1 ({raw[1]['header']['uniqueId']}): signature does not verify"
        in result.stderr
    )


def test_manifest_cli_verify_not_json(pki: Pki, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text("hello")
    result = runner.invoke(app, _args(pki, tmp_path, manifest))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: a manifest must be a JSON array (at byte 0)"


def test_manifest_cli_verify_missing_signers(pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(
        app,
        [
            "verify",
            str(manifest),
            "--signers",
            str(empty),
            "--roots",
            str(pki.roots_file(tmp_path)),
        ],
    )
    assert result.exit_code == 1
    assert "no certificates found in" in result.stderr


def test_manifest_cli_verify_table_names_failure(pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 2)
    raw = json.loads(manifest.read_bytes())
    raw[0]["protected"] = raw[0]["protected"][:-1]
    manifest.write_text(json.dumps(raw))
    result = runner.invoke(app, _args(pki, tmp_path, manifest))
    assert result.exit_code == 1
    assert "1 of 2 entries verified" in result.stdout
    assert result.stderr.startswith("error: entry 0 (")


def _bare_key_manifest(pki: Pki, tmp_path: Path, keep_x5c: bool = False) -> Path:
    """A TrustManager-style version-2 reel: keys without certificates."""
    from keyfab.manifest._serialize import element_json

    payload = element_json(pki.element("0102"))
    payload["version"] = 2
    if not keep_x5c:
        for key in payload["publicKeySet"]["keys"]:
            key.pop("x5c", None)
    path = tmp_path / "bare.json"
    path.write_text(json.dumps([pki.raw_entry(pki.header(), json.dumps(payload).encode())]))
    return path


def test_manifest_cli_roots_optional_for_bare_keys(pki: Pki, tmp_path: Path) -> None:
    manifest = _bare_key_manifest(pki, tmp_path)
    signers = str(pki.signers_dir(tmp_path))
    result = runner.invoke(app, ["verify", str(manifest), "--signers", signers])
    assert result.exit_code == 0, result.output
    assert "1 of 1 entries verified" in result.output


def test_manifest_cli_certificates_without_roots_name_the_option(pki: Pki, tmp_path: Path) -> None:
    manifest = _bare_key_manifest(pki, tmp_path, keep_x5c=True)
    signers = str(pki.signers_dir(tmp_path))
    result = runner.invoke(app, ["verify", str(manifest), "--signers", signers])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: entry 0 (0102): the entry carries certificates but no roots were given: "
        "pass --roots\n"
    )


def test_manifest_cli_export_signed_after_provisioning_verifies(pki: Pki, tmp_path: Path) -> None:
    """An older batch exported with a signer issued after its devices were provisioned."""
    import datetime

    from cryptography.hazmat.primitives.asymmetric import ec

    from keyfab import pki as keyfab_pki
    from keyfab.manifest import EntrySigner, write_manifest

    from .conftest import T0

    later = T0 + datetime.timedelta(days=400)
    key = ec.generate_private_key(ec.SECP256R1())
    profile = keyfab_pki.manifest_signer("Example", "Later Signer")
    certificate = pki.ca.issue(profile, key.public_key(), now=later)
    manifest = tmp_path / "old-batch.json"
    with manifest.open("wb") as out:
        elements = (pki.element(f"03{n:016x}") for n in range(2))
        write_manifest(elements, EntrySigner(key, certificate, signed_at=later), out)
    signers = tmp_path / "later-signers"
    signers.mkdir()
    (signers / "later.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    roots = str(pki.roots_file(tmp_path))
    result = runner.invoke(
        app, ["verify", str(manifest), "--signers", str(signers), "--roots", roots]
    )
    assert result.exit_code == 0, result.output
    assert "2 of 2 entries verified" in result.output
