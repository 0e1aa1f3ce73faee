"""Export: keyfab-provisioned devices out as a signed manifest, checked two ways.

The manifest is verified by keyfab's own verifier AND by joserfc, an independent
JWS implementation, so the test proves the format rather than self-consistency.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey
from joserfc.registry import HeaderParameter
from sqlalchemy import select
from typer.testing import CliRunner

from keyfab.authority import Authority
from keyfab.cli.manifest import app
from keyfab.registry import AuditEvent
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

from .conftest import Pki

runner = CliRunner()


# Microchip's unprotected header carries uniqueId, keyfab's protected header the
# signing time iat (a JWT claim replicated as a header, RFC 7519 section 5.3);
# joserfc refuses header parameters it does not know unless they are registered.
REGISTRY = jws.JWSRegistry(
    header_registry={
        "uniqueId": HeaderParameter("device", "str"),
        "iat": HeaderParameter("signing time", "int"),
    },
    algorithms=["ES256"],
)


def _joserfc_payloads(manifest: Path, signer_pem: bytes) -> list[dict[str, object]]:
    key = ECKey.import_key(x509.load_pem_x509_certificate(signer_pem).public_key())
    payloads = []
    for entry in json.loads(manifest.read_bytes()):
        checked = jws.deserialize_json(entry, key, algorithms=["ES256"], registry=REGISTRY)
        assert checked.headers()["alg"] == "ES256"
        payloads.append(json.loads(checked.payload))
    return payloads


def test_manifest_export_in_memory_verified_by_joserfc(pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 4)
    signer_pem = pki.signer.public_bytes(Encoding.PEM)
    payloads = _joserfc_payloads(manifest, signer_pem)
    assert [p["uniqueId"] for p in payloads] == [f"01{n:016x}" for n in range(4)]
    entry = json.loads(manifest.read_bytes())[0]
    header = json.loads(base64.urlsafe_b64decode(entry["protected"] + "=="))
    assert list(header) == ["typ", "alg", "kid", "x5t#S256", "iat"]  # Microchip order, then iat
    assert "=" not in entry["payload"] + entry["protected"] + entry["signature"]


def test_manifest_export_tampered_rejected_by_joserfc(pki: Pki, tmp_path: Path) -> None:
    manifest = pki.write(tmp_path / "m.json", 1)
    raw = json.loads(manifest.read_bytes())
    raw[0]["payload"] = (
        raw[0]["payload"][:-2]
        + ("A" if raw[0]["payload"][-2] != "A" else "B")
        + raw[0]["payload"][-1]
    )
    manifest.write_text(json.dumps(raw))
    with pytest.raises(BadSignatureError):
        _joserfc_payloads(manifest, pki.signer.public_bytes(Encoding.PEM))


def test_manifest_export_batch_round_trip(
    keyfab: Keyfab, recipe_file: Path, home: Path, tmp_path: Path
) -> None:
    assert keyfab("init", "--org", "Acme")[0] == 0
    code, _, err = keyfab(
        "provision", "--recipe", str(recipe_file), "--count", "6", "--batch", "b1", "--json"
    )
    assert code == 0, err
    space = Workspace(home)
    signer_pem = tmp_path / "signers" / "signer.pem"
    signer_pem.parent.mkdir()
    key_uri = f"soft:{tmp_path / 'signer-keys' / 'manifest.pem'}"
    result = runner.invoke(
        app, ["signer", "--key", key_uri, "--new", "--out", str(signer_pem)], obj=space
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "b1.json"
    result = runner.invoke(
        app,
        [
            "export",
            "--batch",
            "b1",
            "--signer",
            key_uri,
            "--signer-cert",
            str(signer_pem),
            "--out",
            str(out),
        ],
        obj=space,
    )
    assert result.exit_code == 0, result.output
    assert "6 entries written" in result.output

    roots = tmp_path / "root.pem"
    roots.write_bytes(Authority(space.registry()).chain[-1].public_bytes(Encoding.PEM))
    result = runner.invoke(
        app,
        ["verify", str(out), "--signers", str(signer_pem.parent), "--roots", str(roots), "--json"],
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["verified"] for line in result.stdout.splitlines()] == [True] * 6

    payloads = _joserfc_payloads(out, signer_pem.read_bytes())
    devices = json.loads(keyfab("devices", "list", "--batch", "b1", "--json")[1])
    assert [p["uniqueId"] for p in payloads] == [d["unique_id"] for d in devices]
    assert {p["partNumber"] for p in payloads} == {"acme-gateway"}
    assert payloads[0]["provisioner"] == {
        "organizationName": "Acme",  # type: ignore[comparison-overlap]
        "organizationalUnitName": "keyfab",
    }
    registry = space.registry()
    try:
        with registry.transaction() as session:
            kinds = [e.kind for e in session.scalars(select(AuditEvent))]
    finally:
        registry.dispose()
    assert kinds[-2:] == ["manifest.signer_issued", "manifest.exported"]


def test_manifest_export_unknown_batch(
    keyfab: Keyfab, home: Path, tmp_path: Path, pki: Pki
) -> None:
    assert keyfab("init", "--org", "Acme")[0] == 0
    key_uri = f"soft:{tmp_path / 'signer-keys' / 'manifest.pem'}"
    signer_pem = tmp_path / "signer.pem"
    space = Workspace(home)
    assert (
        runner.invoke(
            app, ["signer", "--key", key_uri, "--new", "--out", str(signer_pem)], obj=space
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "export",
            "--batch",
            "nope",
            "--signer",
            key_uri,
            "--signer-cert",
            str(signer_pem),
            "--out",
            str(tmp_path / "x.json"),
        ],
        obj=space,
    )
    assert result.exit_code == 1
    assert "no batch named 'nope'" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_manifest_export_joserfc_agrees_on_real_sample(microchip: Path) -> None:
    signer = (microchip / "MCHP_manifest_signer_2_Aug2019_Aug2020.crt").read_bytes()
    payloads = _joserfc_payloads(microchip / "manifest_ATECC608A-MAH4I.json", signer)
    assert [p["uniqueId"] for p in payloads] == ["01230390b3d1450c01", "0123d26e26e688c901"]
