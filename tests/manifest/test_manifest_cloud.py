"""Cloud hand-off files, checked against the documented shapes of each service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from typer.testing import CliRunner

from keyfab.authority import Authority
from keyfab.cli.export import app as export_app
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

from .conftest import SAMPLE
from .test_manifest_import import _import, _roots_dir

runner = CliRunner()
AWS_VALUE_LIMIT = 4096  # RegisterThing: each parameter value at most 4096 characters
AWS_TEMPLATE_LIMIT = 10240  # StartThingRegistrationTask: templateBody at most 10240


@pytest.fixture
def provisioned(keyfab: Keyfab, recipe_file: Path, home: Path) -> Workspace:
    assert keyfab("init", "--org", "Acme")[0] == 0
    code, _, err = keyfab(
        "provision", "--recipe", str(recipe_file), "--count", "4", "--batch", "b1", "--json"
    )
    assert code == 0, err
    return Workspace(home)


def _resolve(node: Any, parameters: dict[str, str]) -> Any:
    """What AWS does with a template: every {"Ref": name} becomes the line's value."""
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return parameters[node["Ref"]]
        return {k: _resolve(v, parameters) for k, v in node.items()}
    return node


def _export(space: Workspace, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(export_app, list(args), obj=space)
    return result.exit_code, result.stdout, result.stderr


def test_manifest_cloud_aws_bulk_registration(provisioned: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "aws"
    code, stdout, err = _export(
        provisioned, "aws-iot", "--out", str(out), "--batch", "b1", "--policy", "DevicePolicy"
    )
    assert code == 0, err
    assert "4 devices exported, 0 skipped" in stdout
    template_text = (out / "provisioning-template.json").read_text()
    assert len(template_text) <= AWS_TEMPLATE_LIMIT
    template = json.loads(template_text)
    assert {r["Type"] for r in template["Resources"].values()} == {
        "AWS::IoT::Thing",
        "AWS::IoT::Certificate",
        "AWS::IoT::Policy",
    }
    lines = [
        json.loads(line) for line in (out / "bulk-registration.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 4
    ca = Authority(provisioned.registry()).certificate
    for line in lines:
        assert set(line) == set(template["Parameters"])
        assert all(len(value) <= AWS_VALUE_LIMIT for value in line.values())
        resources = _resolve(template["Resources"], line)
        cert = x509.load_pem_x509_certificate(
            resources["certificate"]["Properties"]["CertificatePem"].encode()
        )
        issuer = x509.load_pem_x509_certificate(
            resources["certificate"]["Properties"]["CACertificatePem"].encode()
        )
        assert issuer == ca
        cert.verify_directly_issued_by(issuer)
        assert resources["thing"]["Properties"]["ThingName"] == line["SerialNumber"]
    assert x509.load_pem_x509_certificates((out / "ca-certificates.pem").read_bytes()) == [ca]


def test_manifest_cloud_aws_sni_only(provisioned: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "aws"
    assert _export(provisioned, "aws-iot", "--out", str(out), "--sni-only")[0] == 0
    template = json.loads((out / "provisioning-template.json").read_text())
    properties = template["Resources"]["certificate"]["Properties"]
    assert properties["CertificateMode"] == "SNI_ONLY"
    assert "CACertificatePem" not in properties
    line = json.loads((out / "bulk-registration.jsonl").read_text().splitlines()[0])
    assert set(line) == {"ThingName", "SerialNumber", "CertificatePem"}


def test_manifest_cloud_imported_microchip_parts(
    keyfab: Keyfab, home: Path, microchip: Path, tmp_path: Path
) -> None:
    assert keyfab("init", "--org", "Acme")[0] == 0
    space = Workspace(home)
    assert _import(space, SAMPLE, microchip, _roots_dir(tmp_path, microchip))[0] == 0
    code, _, err = _export(space, "aws-iot", "--out", str(tmp_path / "aws"))
    assert code == 0, err
    lines = [
        json.loads(line)
        for line in (tmp_path / "aws" / "bulk-registration.jsonl").read_text().splitlines()
    ]
    assert [line["ThingName"] for line in lines] == [
        "se-01230390b3d1450c01",
        "se-0123d26e26e688c901",
    ]
    for line in lines:
        cert = x509.load_pem_x509_certificate(line["CertificatePem"].encode())
        cert.verify_directly_issued_by(
            x509.load_pem_x509_certificate(line["CACertificatePem"].encode())
        )

    code, _, err = _export(space, "azure-dps", "--out", str(tmp_path / "dps"))
    assert code == 0, err
    enrollments = [
        json.loads(line)
        for line in (tmp_path / "dps" / "individual-enrollments.jsonl").read_text().splitlines()
    ]
    assert [e["registrationId"] for e in enrollments] == [
        "sn01230390b3d1450c01",
        "sn0123d26e26e688c901",
    ]
    assert enrollments[0]["attestation"]["type"] == "x509"
    pem = enrollments[0]["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"]
    assert (
        x509.load_pem_x509_certificate(pem.encode())
        .subject.rfc4514_string()
        .startswith("CN=sn01230390B3D1450C01")
    )


def test_manifest_cloud_azure_group_and_cn_uniqueness(
    provisioned: Workspace, tmp_path: Path
) -> None:
    out = tmp_path / "dps"
    code, stdout, err = _export(provisioned, "azure-dps", "--out", str(out), "--group-id", "g1")
    group = json.loads((out / "enrollment-group.json").read_text())
    assert group["enrollmentGroupId"] == "g1"
    signing = group["attestation"]["x509"]["signingCertificates"]["primary"]["certificate"]
    assert (
        x509.load_pem_x509_certificate(signing.encode())
        == Authority(provisioned.registry()).certificate
    )
    # The IDevID CN is the device serial, so every device gets its own DPS
    # registration ID (it was the product name once: only one could enroll).
    assert code == 0, err
    assert "4 devices exported, 0 skipped" in stdout
    enrollments = [
        json.loads(line) for line in (out / "individual-enrollments.jsonl").read_text().splitlines()
    ]
    assert len({e["registrationId"] for e in enrollments}) == len(enrollments) == 4


def test_manifest_cloud_unknown_batch(provisioned: Workspace, tmp_path: Path) -> None:
    code, _, err = _export(provisioned, "aws-iot", "--out", str(tmp_path), "--batch", "zz")
    assert code == 1
    assert "error: no batch named 'zz'" in err


@pytest.mark.parametrize("cloud", ["aws-iot", "azure-dps"])
def test_manifest_cloud_names_what_it_leaves_out(
    provisioned: Workspace, keyfab: Keyfab, tmp_path: Path, cloud: str
) -> None:
    """A revoked device is left out on purpose: named on a 'skipped:' line, exit 0."""
    import sqlite3

    with sqlite3.connect(provisioned.home / "keyfab.db") as db:
        serials = [r[0] for r in db.execute("SELECT serial FROM devices ORDER BY id")]
        db.execute(
            "UPDATE devices SET state = 'failed', failure = 'no answer' WHERE serial = ?",
            (serials[2],),
        )
    assert keyfab("devices", "revoke", serials[1])[0] == 0
    code, stdout, err = _export(provisioned, cloud, "-o", str(tmp_path / "out"), "-b", "b1")
    assert code == 0, err
    assert "2 devices exported, 2 skipped" in stdout
    assert f"skipped: device {serials[1]}: revoked" in err
    assert f"skipped: device {serials[2]}: failed: no answer" in err
