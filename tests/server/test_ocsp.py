"""OCSP, the CRL and the CA certificate over HTTP, judged by ``openssl`` and pkilint.

One workspace for the module: its public URL points at a real ``keyfab serve``
(plain HTTP on loopback, as OCSP and CRLs usually are), a batch of devices is
provisioned through the CLI after the URL was set, and OpenSSL's own OCSP
client, ``openssl verify -crl_check`` and DigiCert's pkilint check what the
server answers.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp as x509_ocsp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfab.registry import queries
from keyfab.workspace import Workspace
from tests.server.conftest import KEYFAB, Server, free_port, make_workspace

LINTERS = KEYFAB.parent
ALLOWED_FINDINGS: frozenset[str] = frozenset()
"""pkilint finding codes accepted as false positives (none so far)."""


@dataclass
class Setup:
    server: Server
    folder: Path
    devices: list[tuple[str, Path]]  # (serial, certificate PEM file)

    @property
    def url(self) -> str:
        return f"{self.server.url}/ocsp"


def keyfab(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KEYFAB), "--home", str(home), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("ocsp")
    home = folder / "home"
    make_workspace(home)
    port = free_port()
    done = keyfab(home, "ca", "urls", "--base", f"http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    recipe = str(home / "recipes" / "gateway.toml")
    done = keyfab(home, "provision", "-r", recipe, "-n", "3", "-b", "ob1")
    assert done.returncode == 0, done.stderr
    space = Workspace(home)
    with space.registry() as registry:
        chain = queries.authorities(registry)
        rows = queries.batch_certificates(registry, "ob1")
    for name in ("manufacturing", "root"):
        certificate = x509.load_der_x509_certificate(chain[name].certificate)
        (folder / f"{name}.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    (folder / "chain.pem").write_bytes(
        (folder / "manufacturing.pem").read_bytes() + (folder / "root.pem").read_bytes()
    )
    devices = []
    for serial, row in rows:
        path = folder / f"{serial}.pem"
        path.write_bytes(x509.load_der_x509_certificate(row.der).public_bytes(Encoding.PEM))
        devices.append((serial, path))
    server = Server(home, port, tls=False, env={"KEYFAB_DATABASE_URL": ""}).start()
    yield Setup(server, folder, devices)
    server.stop()


def openssl_ocsp(setup: Setup, *args: str) -> str:
    """``openssl ocsp`` against the server, trusting the root; its whole output."""
    done = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(setup.folder / "manufacturing.pem"),
         "-CAfile", str(setup.folder / "root.pem"), "-url", setup.url, *args],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    return done.stdout + done.stderr


def lint(kind: str, path: Path, *extra: str) -> list[str]:
    """pkilint's findings at WARNING and above, minus the allowed ones."""
    done = subprocess.run(
        [str(LINTERS / kind), "lint", *extra, "-s", "WARNING", "-f", "JSON", str(path)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    report = json.loads(done.stdout)
    return [
        f"{finding['code']} ({finding['severity']}): {finding.get('message')}"
        for result in report["results"]
        for finding in result["finding_descriptions"]
        if finding["code"] not in ALLOWED_FINDINGS
    ]


def test_issued_certificates_carry_the_urls(setup: Setup) -> None:
    _, path = setup.devices[0]
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert {d.access_location.value for d in access.value} == {
        setup.url,
        f"{setup.server.url}/ca/manufacturing.crt",
    }
    served = httpx.get(f"{setup.server.url}/ca/manufacturing.crt")
    assert served.headers["content-type"] == "application/pkix-cert"
    assert (
        x509.load_der_x509_certificate(served.content).public_bytes(Encoding.PEM)
        == (setup.folder / "manufacturing.pem").read_bytes()
    )
    assert lint("lint_pkix_cert", path) == []


def test_good_with_and_without_nonce(setup: Setup) -> None:
    _, path = setup.devices[0]
    with_nonce = openssl_ocsp(setup, "-cert", str(path), "-resp_text")
    assert f"{path}: good" in with_nonce
    assert "Response verify OK" in with_nonce
    assert "WARNING" not in with_nonce  # openssl warns when the nonce is not echoed
    assert "OCSP Nonce" in with_nonce
    without = openssl_ocsp(setup, "-cert", str(path), "-no_nonce", "-resp_text")
    assert f"{path}: good" in without
    assert "Response verify OK" in without
    assert "OCSP Nonce" not in without


def test_unknown_serial(setup: Setup) -> None:
    out = openssl_ocsp(setup, "-serial", "0x1234567890abcdef", "-no_nonce")
    assert "0x1234567890abcdef: unknown" in out
    assert "Response verify OK" in out


def test_another_ca_is_unauthorized(setup: Setup) -> None:
    out = subprocess.run(
        ["openssl", "ocsp", "-issuer", str(setup.folder / "root.pem"),
         "-cert", str(setup.folder / "manufacturing.pem"), "-url", setup.url, "-no_nonce"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert "Responder Error: unauthorized (6)" in out.stdout + out.stderr


def test_get_with_base64_in_the_path(setup: Setup) -> None:
    _, path = setup.devices[1]
    request = setup.folder / "get-req.der"
    openssl_ocsp(setup, "-cert", str(path), "-no_nonce", "-reqout", str(request))
    encoded = base64.b64encode(request.read_bytes()).decode()
    for form in (encoded, httpx.URL(f"/{encoded}").raw_path.decode()[1:]):
        answer = httpx.get(f"{setup.url}/{form}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/ocsp-response"
        assert answer.headers["cache-control"].startswith("max-age=")
        response = setup.folder / "get-resp.der"
        response.write_bytes(answer.content)
        out = openssl_ocsp(setup, "-cert", str(path), "-respin", str(response), "-no_nonce")
        assert f"{path}: good" in out
        assert "Response verify OK" in out


def test_revocation_through_the_cli_flips_the_next_answers(setup: Setup) -> None:
    serial, path = setup.devices[2]
    assert f"{path}: good" in openssl_ocsp(setup, "-cert", str(path), "-no_nonce")  # now cached
    done = keyfab(setup.server.home, "devices", "revoke", serial, "--reason", "keyCompromise")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    out = ""
    while time.monotonic() < deadline and f"{path}: revoked" not in out:
        out = openssl_ocsp(setup, "-cert", str(path), "-no_nonce")
        time.sleep(0.05)  # polling interval
    assert f"{path}: revoked" in out
    assert "Reason: keyCompromise" in out
    assert "Revocation Time:" in out
    with_nonce = openssl_ocsp(setup, "-cert", str(path))
    assert f"{path}: revoked" in with_nonce
    assert "WARNING" not in with_nonce

    crl = httpx.get(f"{setup.server.url}/crl/manufacturing.crl")
    assert crl.headers["content-type"] == "application/pkix-crl"
    crl_file = setup.folder / "crl.pem"
    crl_file.write_bytes(x509.load_der_x509_crl(crl.content).public_bytes(Encoding.PEM))
    (setup.folder / "crl.der").write_bytes(crl.content)
    verify = ["openssl", "verify", "-crl_check", "-CRLfile", str(crl_file)]
    verify += ["-CAfile", str(setup.folder / "chain.pem")]
    revoked = subprocess.run([*verify, str(path)], capture_output=True, text=True, check=False)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    good = subprocess.run(
        [*verify, str(setup.devices[0][1])], capture_output=True, text=True, check=False
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert lint("lint_crl", setup.folder / "crl.der", "-t", "CRL", "-p", "PKIX") == []


def _post(setup: Setup, body: bytes) -> httpx.Response:
    return httpx.post(
        setup.url, content=body, headers={"Content-Type": "application/ocsp-request"}, timeout=30
    )


def test_every_response_kind_is_lint_clean(setup: Setup) -> None:
    _, path = setup.devices[0]
    revoked = setup.devices[2][1]
    kinds = {
        "good": ("-cert", str(path)),
        "good-nonce": ("-cert", str(path), "-nonce"),
        "unknown": ("-serial", "0x42"),
        "revoked": ("-cert", str(revoked)),  # revoked or still good: both must lint clean
    }
    for kind, args in kinds.items():
        request = setup.folder / f"{kind}.req"
        openssl_ocsp(setup, *args, "-reqout", str(request))
        response = setup.folder / f"{kind}.resp"
        response.write_bytes(_post(setup, request.read_bytes()).content)
        assert lint("lint_ocsp_response", response) == [], kind


def _status(answer: httpx.Response) -> x509_ocsp.OCSPResponseStatus:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/ocsp-response"
    return x509_ocsp.load_der_ocsp_response(answer.content).response_status


def test_bad_input_gets_ocsp_errors_never_500(setup: Setup) -> None:
    malformed = x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    request = setup.folder / "bad.req"
    openssl_ocsp(setup, "-cert", str(setup.devices[0][1]), "-reqout", str(request))
    der = request.read_bytes()
    for body in (b"garbage", der[: len(der) // 2], b"\x30\x82" + b"\x00" * 4000):
        assert _status(_post(setup, body)) is malformed
    for path in ("not base64!", "QUJD", "A" * 5000, ""):
        assert _status(httpx.get(f"{setup.url}/{path}")) is malformed
    wrong_type = httpx.post(setup.url, content=der, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    huge = _post(setup, b"\x30" * (1024 * 1024))
    assert huge.status_code == 413


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzzed_openssl_requests(setup: Setup, data: st.DataObject) -> None:
    """Requests captured from ``openssl ocsp -reqout``, bytes flipped and cut: never a 500."""
    request = setup.folder / "fuzz.req"
    if not request.exists():
        openssl_ocsp(setup, "-cert", str(setup.devices[0][1]), "-reqout", str(request))
    body = bytearray(request.read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(0, len(body)))]
    assert _status(_post(setup, bytes(body))) in {
        x509_ocsp.OCSPResponseStatus.SUCCESSFUL,
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        x509_ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }
