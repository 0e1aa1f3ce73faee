"""The evidence pack: its figures are the registry's, its signature is checked by
keyfab and by OpenSSL, a changed byte anywhere is caught, the PDF says what the HTML says.

One pack is made for the module from a known fleet: batch ``b1`` of five devices
(one fails, one is revoked, three attestation results) and batch ``b2`` left out
of the pack's scope; the judges are SQL over the database, ``openssl cms``,
``sha256sum`` and poppler's ``pdftotext``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.authority import Authority, initialise, revoke_device
from keyfab.clock import utc_now
from keyfab.pki import RevocationReason
from keyfab.provision import batch, create_batch, run_batch
from keyfab.registry.models import AttestationResult, Device
from keyfab.report import render, signature
from keyfab.report.pack import FILES, MANIFEST, SIGNATURE
from keyfab.rot import RootOfTrust
from keyfab.rot.soft import SoftRootOfTrust
from keyfab.workspace import Workspace
from tests.conftest import Keyfab
from tests.test_flow_failures import MEMORY_RECIPE, LyingDevice

PRODUCT = "acme-gateway"
ARTEFACTS = Path(os.environ.get("KEYFAB_ARTEFACTS", Path(__file__).parent.parent / "build"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    root = tmp_path_factory.mktemp("report")
    space = Workspace(root / "home")
    initialise(space, "Acme")

    def opener(driver: str, options: Any, slot: int, name: str, home: str) -> RootOfTrust:
        return LyingDevice(None) if (name, slot) == ("b1", 2) else SoftRootOfTrust(None)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch, "open_device", opener)
        for name, count in (("b1", 5), ("b2", 2)):
            create_batch(space, MEMORY_RECIPE, root, name, count)
            run_batch(space, name)
    with Authority.open(space) as authority:
        revoke_device(authority, "AGW-00000001", RevocationReason.KEY_COMPROMISE, by="test")
        _attest(authority, {"AGW-00000003": [], "AGW-00000004": ["quote: bad signature"]})
        _attest(authority, {"AGW-00000004": ["quote: bad signature", "pcr 7 differs"]})
        _attest(authority, {"AGW-00000006": ["outside the scope"]})  # batch b2
    out = root / "pack"
    code, _, err = Keyfab(space.home)(
        "report", "evidence", "--product", PRODUCT, "--batch", "b1", "--out", str(out)
    )
    assert code == 0, err
    return space, out


def _attest(authority: Authority, verdicts: dict[str, list[str]]) -> None:
    """Record results as ``attest.service`` does (a TPM ceremony is not what is tested here)."""
    with authority.transaction() as session:
        for serial, reasons in verdicts.items():
            device = session.query(Device).filter_by(serial=serial).one()
            verdict = "failed" if reasons else "trusted"
            session.add(
                AttestationResult(
                    device_id=device.id, at=utc_now(), verdict=verdict,
                    reasons=json.dumps(reasons), notes="[]", pcrs="{}",
                )
            )  # fmt: skip
            device.attestation, device.attested_at = verdict, utc_now()


def _sql(space: Workspace, query: str) -> dict[str, int]:
    with sqlite3.connect(space.home / "keyfab.db") as db:
        return {str(k): int(n) for k, n in db.execute(query)}


B1 = "(SELECT id FROM batches WHERE name = 'b1')"


def _evidence(out: Path) -> dict[str, Any]:
    return json.loads((out / "evidence.json").read_text())  # type: ignore[no-any-return]


def test_every_figure_is_the_registry_s(fleet: tuple[Workspace, Path]) -> None:
    space, out = fleet
    evidence = _evidence(out)
    devices = f"FROM devices WHERE batch_id = {B1}"
    joined = f"FROM certificates c JOIN devices d ON c.device_id = d.id WHERE d.batch_id = {B1}"
    results = (
        f"FROM attestation_results r JOIN devices d ON r.device_id = d.id WHERE d.batch_id = {B1}"
    )
    expected = {
        "states": _sql(space, f"SELECT state, count(*) {devices} GROUP BY state"),
        "failures": _sql(
            space, f"SELECT failure, count(*) {devices} AND failure IS NOT NULL GROUP BY 1"
        ),
        "by_profile": _sql(space, f"SELECT c.profile, count(*) {joined} GROUP BY 1"),
        "revoked": _sql(
            space,
            f"SELECT c.revocation_reason, count(*) {joined} AND c.revoked_at IS NOT NULL"
            " GROUP BY 1",
        ),
        "devices": _sql(space, f"SELECT attestation, count(*) {devices} GROUP BY 1"),
        "results": _sql(space, f"SELECT r.verdict, count(*) {results} GROUP BY 1"),
    }  # fmt: skip
    assert expected["states"] == {"provisioned": 3, "failed": 1, "revoked": 1}
    assert expected["results"] == {"trusted": 1, "failed": 2}
    assert evidence["devices"]["states"] == expected["states"]
    assert evidence["devices"]["total"] == 5
    assert evidence["devices"]["failures"] == expected["failures"]
    assert evidence["certificates"]["by_profile"] == expected["by_profile"]
    assert evidence["certificates"]["revoked"] == expected["revoked"] == {"keyCompromise": 1}
    assert evidence["attestation"]["devices"] == expected["devices"]
    assert evidence["attestation"]["results"] == expected["results"]
    assert evidence["attestation"]["failure_reasons"] == {
        "quote: bad signature": 2,
        "pcr 7 differs": 1,
    }
    assert [b["name"] for b in evidence["batches"]] == ["b1"]
    html = (out / "report.html").read_text()
    for table in (*expected.values(), evidence["attestation"]["failure_reasons"]):
        for key, count in table.items():
            row = f'<tr><td>{_escaped(key)}</td><td class="n">{count}</td></tr>'
            assert row in html, row
    assert '<span class="figure" id="devices-total">5</span>' in html


def _escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&#39;")
        .replace('"', "&#34;")
    )


def test_ca_keys_and_lint_and_audit_are_reported(fleet: tuple[Workspace, Path]) -> None:
    _, out = fleet
    evidence = _evidence(out)
    assert {ca["storage"] for ca in evidence["cas"]} == {"soft"}
    assert all("development only" in ca["note"] for ca in evidence["cas"])
    linted = {r["profile"]: r["findings"] for r in evidence["profiles"]["results"]}
    assert linted == {"root-ca": [], "manufacturing-ca": [], "idevid": []}
    assert evidence["audit"]["ok"]
    assert evidence["audit"]["checkpoints"] >= 3
    assert evidence["sbom"]["components"] > 20
    sbom = json.loads((out / "sbom.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    none = {r["ref"] for r in evidence["requirements"] if r["status"] == "none"}
    assert none == {"(2)(c)", "(2)(f)", "CR 3.4", "EDR 3.10"}  # no signed release


def test_the_report_is_an_audit_event(fleet: tuple[Workspace, Path]) -> None:
    space, out = fleet
    with sqlite3.connect(space.home / "keyfab.db") as db:
        rows = db.execute("SELECT data FROM audit_events WHERE kind = 'report.generated'")
        (data,) = [json.loads(row[0]) for row in rows]
    assert data["manifest_sha256"] == hashlib.sha256((out / MANIFEST).read_bytes()).hexdigest()
    assert data["batches"] == ["b1"]
    code, _, err = Keyfab(space.home)("audit", "verify")
    assert code == 0, err


def test_openssl_and_sha256sum_accept_the_pack(
    fleet: tuple[Workspace, Path], tmp_path: Path
) -> None:
    space, out = fleet
    with Authority.open(space) as authority:
        (tmp_path / "root.pem").write_bytes(authority.chain[1].public_bytes(Encoding.PEM))
    done = subprocess.run(
        ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(out / SIGNATURE),
         "-content", str(out / MANIFEST), "-CAfile", str(tmp_path / "root.pem"),
         "-out", os.devnull],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Verification successful" in done.stderr
    sums = subprocess.run(["sha256sum", "-c", MANIFEST], cwd=out, capture_output=True, text=True)
    assert sums.returncode == 0
    assert sums.stdout.count(": OK") == len(FILES)
    code, said, err = Keyfab(space.home)(
        "report", "verify", str(out), "--CAfile", str(tmp_path / "root.pem")
    )
    assert code == 0, err
    assert "evidence pack intact" in said


@pytest.mark.parametrize("name", [*FILES, MANIFEST, SIGNATURE])
def test_a_changed_byte_is_caught_naming_the_file(
    fleet: tuple[Workspace, Path], tmp_path: Path, name: str
) -> None:
    space, out = fleet
    copy = tmp_path / "pack"
    shutil.copytree(out, copy)
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / name).write_bytes(bytes(data))
    code, _, err = Keyfab(space.home)("report", "verify", str(copy))
    assert code == 1
    assert err.strip().count("\n") == 0
    assert err.startswith(f"{name}:") or f"error: {name}:" in err, err


def test_the_signature_refuses_every_bit_flip(fleet: tuple[Workspace, Path]) -> None:
    space, out = fleet
    signed, listed = (out / SIGNATURE).read_bytes(), (out / MANIFEST).read_bytes()
    with Authority.open(space) as authority:
        roots = [authority.chain[1]]
    assert signature.check(signed, listed, roots).signer is not None
    accepted = []
    for at in range(len(signed)):  # every byte: one in three once missed a BIT STRING's pad count
        flipped = bytearray(signed)
        flipped[at] ^= 0x01
        try:
            signature.check(bytes(flipped), listed, roots)
            accepted.append(at)
        except signature.VerificationError:
            pass
    assert accepted == []


def test_a_certificate_signature_of_odd_bits_is_refused(fleet: tuple[Workspace, Path]) -> None:
    """DER of a bit string one bit shorter, which ``cryptography`` reads as the same octets."""
    from pyasn1.codec.der import decoder, encoder
    from pyasn1.type import univ
    from pyasn1_modules import rfc5652

    space, out = fleet
    signed, listed = (out / SIGNATURE).read_bytes(), (out / MANIFEST).read_bytes()
    with Authority.open(space) as authority:
        roots = [authority.chain[1]]
    info, _ = decoder.decode(signed, asn1Spec=rfc5652.ContentInfo())
    inner, _ = decoder.decode(bytes(info["content"]), asn1Spec=rfc5652.SignedData())
    embedded = inner["certificates"][len(inner["certificates"]) - 1]["certificate"]
    embedded["signature"] = univ.BitString(binValue=embedded["signature"].asBinary()[:-1])
    info["content"] = univ.Any(encoder.encode(inner))
    with pytest.raises(signature.VerificationError, match="whole octets"):
        signature.check(encoder.encode(info), listed, roots)


def test_pdf_has_the_html_sections(fleet: tuple[Workspace, Path]) -> None:
    _, out = fleet
    text = subprocess.run(
        ["pdftotext", "-layout", str(out / "report.pdf"), "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    html = (out / "report.html").read_text()
    headings = [heading for _, heading in render.SECTIONS]
    assert re.findall(r"<h2>(.*?)</h2>", html) == headings
    at = 0
    for heading in headings:  # in order (the requirements table links to them first)
        at = text.find(heading, at + 1)
        assert at != -1, f"{heading!r} missing or out of order in the PDF"
    assert "Compliance evidence pack: acme-gateway" in text
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "2", str(out / "report.pdf"),
         str(ARTEFACTS / "evidence-pack")],
        check=True,
    )  # fmt: skip
    assert (ARTEFACTS / "evidence-pack-1.png").stat().st_size > 10_000


def test_a_batch_of_another_product_is_one_line(
    fleet: tuple[Workspace, Path], tmp_path: Path
) -> None:
    space, _ = fleet
    code, _, err = Keyfab(space.home)(
        "report", "evidence", "--product", "other", "--batch", "b1", "--out", str(tmp_path / "x")
    )
    assert code == 1
    assert "no batch named 'b1' for product 'other'" in err
