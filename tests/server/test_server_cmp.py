"""Lightweight CMP against a real ``keyfab serve``, judged by OpenSSL's own ``openssl cmp``.

Every issued certificate must verify with ``openssl verify`` against the root
and be in the registry and the audit log; refusals are CMP error messages
with the right PKIFailureInfo bit, never a 500, never a certificate.
"""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from pyasn1_modules import rfc4210, rfc8018
from sqlalchemy import select

from keyfab.cmp import messages
from keyfab.registry import AuditEvent, CmpSecret, CmpTransaction, Registry, queries
from tests.server import cmp_client
from tests.server.conftest import KEYFAB, Server, batch_device, free_port

PATH = ".well-known/cmp"
PKIX = "application/pkixcmp"


@pytest.fixture(scope="module")
def cmp_server(service_home: Path, server: Server) -> Iterator[Server]:
    """A second ``keyfab serve`` on the same workspace over plain HTTP (openssl cmp's default)."""
    running = Server(service_home, free_port(), tls=False, env={"KEYFAB_DATABASE_URL": ""}).start()
    yield running
    running.stop()


def secret(home: Path, device: str, *extra: str) -> tuple[str, str]:
    out = subprocess.run(
        [str(KEYFAB), "--home", str(home), "cmp", "secret", "--device", device, "--json", *extra],
        check=True,
        capture_output=True,
        text=True,
    )
    made = json.loads(out.stdout)
    return made["reference"], made["secret"]


def new_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path


def openssl_cmp_command(running: Server, *args: str) -> list[str]:
    return ["openssl", "cmp", "-server", f"127.0.0.1:{running.port}", "-path", PATH, *args]


def openssl_cmp(running: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # openssl cmp logs to stdout and stderr: one stream
        openssl_cmp_command(running, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )


def mac_ir(reference: str, secret_value: str, key: Path, out: Path) -> list[str]:
    """openssl cmp arguments for an ir protected by a one-time secret, subject /CN=x."""
    return [
        *("-cmd", "ir", "-ref", reference, "-secret", f"pass:{secret_value}"),
        *("-newkey", str(key), "-subject", "/CN=x", "-certout", str(out)),
    ]


def signed(command: str, cert: Path, key: Path, server: Server) -> list[str]:
    """openssl cmp arguments for a request signed by cert/key, trusting the server's anchor."""
    trusted = server.home / "server" / "trust.pem"
    return ["-cmd", command, "-cert", str(cert), "-key", str(key), "-trusted", str(trusted)]


def check_issued(home: Path, registry: Registry, certificate: Path, kind: str) -> x509.Certificate:
    """openssl verify, the registry row and the audit events of one issued certificate."""
    trust = home / "server" / "trust.pem"
    chain = x509.load_pem_x509_certificates(trust.read_bytes())
    root, ca = certificate.with_suffix(".root"), certificate.with_suffix(".ca")
    root.write_bytes(chain[-1].public_bytes(Encoding.PEM))
    ca.write_bytes(chain[0].public_bytes(Encoding.PEM))
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(ca), str(certificate)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    issued = x509.load_pem_x509_certificate(certificate.read_bytes())
    number = f"{issued.serial_number:x}"
    found = queries.find_certificate(registry, number)
    assert found is not None
    assert found.certificate.der == issued.public_bytes(Encoding.DER)
    with registry.reading() as session:
        kinds = session.scalars(
            select(AuditEvent.kind).where(AuditEvent.data.contains(number))
        ).all()
    assert "certificate.issued" in kinds
    assert kind in kinds
    return issued


def wait_for_waiting(registry: Registry, reference: str, deadline: float = 30.0) -> None:
    """Poll (bounded) until keyfab has deferred the request under ``reference``."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with registry.reading() as session:
            found = session.scalars(
                select(CmpTransaction.state).where(CmpTransaction.sender == f"ref:{reference}")
            ).all()
        if "waiting" in found:
            return
        time.sleep(0.05)  # polling interval, not synchronisation
    raise AssertionError("the request was never deferred")


def test_ir_with_a_one_time_secret(cmp_server: Server, registry: Registry, tmp_path: Path) -> None:
    reference, value = secret(cmp_server.home, "CMP-0001")
    key, out = new_key(tmp_path / "k.pem"), tmp_path / "cert.pem"
    args = ["-cmd", "ir", "-ref", reference, "-secret", f"pass:{value}", "-newkey", str(key)]
    done = openssl_cmp(cmp_server, *args, "-subject", "/CN=anything", "-certout", str(out))
    assert done.returncode == 0, done.stdout
    issued = check_issued(cmp_server.home, registry, out, "cmp.enrolled")
    serials = issued.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)
    assert [s.value for s in serials] == ["CMP-0001"]  # policy's subject, not the request's
    again = openssl_cmp(cmp_server, *args, "-subject", "/CN=x", "-certout", str(tmp_path / "2"))
    assert again.returncode != 0
    assert "notAuthorized" in again.stdout  # one-time
    assert not (tmp_path / "2").exists()


def test_ir_with_implicit_confirmation(
    cmp_server: Server, registry: Registry, tmp_path: Path
) -> None:
    reference, value = secret(cmp_server.home, "CMP-0002")
    out = tmp_path / "cert.pem"
    done = openssl_cmp(
        cmp_server,
        *mac_ir(reference, value, new_key(tmp_path / "k.pem"), out),
        *("-implicit_confirm", "-reqout", str(tmp_path / "ir.der")),
    )
    assert done.returncode == 0, done.stdout
    assert "CERTCONF" not in done.stdout  # keyfab granted implicit confirmation
    check_issued(cmp_server.home, registry, out, "cmp.enrolled")


def test_wrong_secret_is_refused(cmp_server: Server, tmp_path: Path) -> None:
    reference, _ = secret(cmp_server.home, "CMP-0003")
    done = openssl_cmp(
        cmp_server,
        *mac_ir(reference, "wrong-secret-value", new_key(tmp_path / "k.pem"), tmp_path / "c.pem"),
        "-unprotected_errors",
    )
    assert done.returncode != 0
    assert "badMessageCheck" in done.stdout
    assert not (tmp_path / "c.pem").exists()


def test_deferred_issuance_polls_until_approved(
    cmp_server: Server, registry: Registry, tmp_path: Path
) -> None:
    reference, value = secret(cmp_server.home, "CMP-0004", "--approval")
    started = subprocess.Popen(
        openssl_cmp_command(
            cmp_server,
            *mac_ir(reference, value, new_key(tmp_path / "k.pem"), tmp_path / "c.pem"),
            *("-total_timeout", "60"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_waiting(registry, reference)
    subprocess.run(
        [str(KEYFAB), "--home", str(cmp_server.home), "cmp", "approve", reference], check=True
    )
    err, _ = started.communicate(timeout=60)
    assert started.returncode == 0, err
    assert "POLLREQ" in err or "pollReq" in err.lower()


def idevid(home: Path, tmp_path: Path, slot: int, batch: str = "b1") -> tuple[Path, Path]:
    """A provisioned device's IDevID key and certificate (soft root of trust files)."""
    folder = home / "devices" / batch / f"{slot:06d}"
    objects = json.loads((folder / "rot.json").read_text())["objects"]
    cert = x509.load_der_x509_certificate(base64.b64decode(objects["idevid-cert"]))
    path = tmp_path / "idevid.pem"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return folder / "idevid.pem", path


def test_idevid_cr_then_kur_then_rr(
    cmp_server: Server, server: Server, admin: httpx.Client, registry: Registry, tmp_path: Path
) -> None:
    """The plant flow: IDevID → operational certificate, renewed, then revoked."""
    batch_device(server, admin, "cmp-renewable")  # its product lets it renew at once
    key, cert = idevid(cmp_server.home, tmp_path, 0, "cmp-renewable")
    ldevid, ldevid_key = tmp_path / "ldevid.pem", new_key(tmp_path / "l.pem")
    done = openssl_cmp(
        cmp_server,
        *signed("cr", cert, key, cmp_server),
        "-newkey",
        str(ldevid_key),
        "-certout",
        str(ldevid),
    )
    assert done.returncode == 0, done.stdout
    check_issued(cmp_server.home, registry, ldevid, "cmp.enrolled")
    renewed, renewed_key = tmp_path / "renewed.pem", new_key(tmp_path / "r.pem")
    done = openssl_cmp(
        cmp_server,
        *signed("kur", ldevid, ldevid_key, cmp_server),
        "-newkey",
        str(renewed_key),
        "-certout",
        str(renewed),
    )
    assert done.returncode == 0, done.stdout
    check_issued(cmp_server.home, registry, renewed, "cmp.reenrolled")
    refused = openssl_cmp(  # kur from the IDevID is not a renewal
        cmp_server,
        *signed("kur", cert, key, cmp_server),
        "-newkey",
        str(renewed_key),
        "-certout",
        str(tmp_path / "no.pem"),
    )
    assert refused.returncode != 0
    assert "notAuthorized" in refused.stdout
    done = openssl_cmp(
        cmp_server,
        *signed("rr", ldevid, ldevid_key, cmp_server),
        "-oldcert",
        str(ldevid),
        "-revreason",
        "4",
    )
    assert done.returncode == 0, done.stdout
    number = f"{x509.load_pem_x509_certificate(ldevid.read_bytes()).serial_number:x}"
    found = queries.find_certificate(registry, number)
    assert found is not None
    assert found.certificate.revocation_reason == "superseded"


def test_p10cr_and_genm(
    cmp_server: Server, server: Server, admin: httpx.Client, registry: Registry, tmp_path: Path
) -> None:
    batch_device(server, admin, "cmp-p10cr")  # its own device: other tests read b1's
    key, cert = idevid(cmp_server.home, tmp_path, 0, "cmp-p10cr")
    new = new_key(tmp_path / "n.pem")
    csr = tmp_path / "req.pem"
    subprocess.run(
        ["openssl", "req", "-new", "-key", str(new), "-subj", "/CN=x", "-out", str(csr)], check=True
    )
    out = tmp_path / "p10.pem"
    done = openssl_cmp(
        cmp_server,
        *signed("p10cr", cert, key, cmp_server),
        "-csr",
        str(csr),
        "-certout",
        str(out),
    )
    assert done.returncode == 0, done.stdout
    check_issued(cmp_server.home, registry, out, "cmp.enrolled")
    done = openssl_cmp(
        cmp_server,
        *signed("genm", cert, key, cmp_server),
        "-infotype",
        "caCerts",
    )
    assert done.returncode == 0, done.stdout
    assert "genp" in done.stdout.lower() or "GENP" in done.stdout


def test_bad_input_is_a_cmp_error_never_a_500(cmp_server: Server) -> None:
    with httpx.Client(base_url=cmp_server.url) as client:
        garbage = client.post(
            f"/{PATH}", content=b"\x30\x03\x02\x01", headers={"content-type": PKIX}
        )
        assert garbage.status_code == 400
        assert failure(garbage.content) == "badDataFormat"
        wrong_type = client.post(f"/{PATH}", content=b"x", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 415
        huge = client.post(f"/{PATH}", content=b"0" * 40000, headers={"content-type": PKIX})
        assert huge.status_code == 413


def failure(der: bytes) -> str:
    """The PKIFailureInfo bit an error message carries."""
    answer = messages.decode(der)
    info = answer["body"]["error"]["pKIStatusInfo"]["failInfo"]
    bits = [i for i, bit in enumerate(info) if bit]
    names = {value: name for name, value in rfc4210.PKIFailureInfo.namedValues.items()}
    return names[bits[0]]


def test_replayed_and_mutated_requests(cmp_server: Server, tmp_path: Path) -> None:
    """A captured ir replayed is refused; bounded mutations never issue and never 500."""
    reference, value = secret(cmp_server.home, "CMP-0009")
    captured = tmp_path / "ir.der"
    done = openssl_cmp(
        cmp_server,
        *mac_ir(reference, value, new_key(tmp_path / "k.pem"), tmp_path / "c.pem"),
        *("-implicit_confirm", "-reqout", str(captured)),
    )
    assert done.returncode == 0, done.stdout
    der = captured.read_bytes()
    with httpx.Client(base_url=cmp_server.url) as client:
        replay = client.post(f"/{PATH}", content=der, headers={"content-type": PKIX})
        assert replay.status_code == 200
        assert failure(replay.content) in ("transactionIdInUse", "notAuthorized")

        @settings(max_examples=40, deadline=None)
        @given(st.integers(0, len(der) - 1), st.integers(1, 255))
        def mutated(position: int, flip: int) -> None:
            changed = bytearray(der)
            changed[position] ^= flip
            answer = client.post(f"/{PATH}", content=bytes(changed), headers={"content-type": PKIX})
            assert answer.status_code in (200, 400)
            body = messages.decode(answer.content)["body"]
            assert body.getName() == "error"

        mutated()


def post(running: Server, der: bytes) -> rfc4210.PKIMessage:
    """One request to keyfab's CMP endpoint; the answer must be a 200 PKIMessage."""
    with httpx.Client(base_url=running.url) as client:
        answer = client.post(f"/{PATH}", content=der, headers={"content-type": PKIX})
    assert answer.status_code == 200, answer.text
    return cmp_client.decode(answer.content)


def test_ir_with_pbmac1(cmp_server: Server, registry: Registry, tmp_path: Path) -> None:
    """PBMAC1 (RFC 9481 §6.1.1), which openssl 3.0 cannot send, built and checked apart."""
    reference, value = secret(cmp_server.home, "CMP-0010")
    mac = cmp_client.Pbmac1(value.encode())
    body = cmp_client.ir_body(ec.generate_private_key(ec.SECP256R1()))
    answer = post(cmp_server, cmp_client.mac_message(body, mac, reference, implicit=True))
    assert answer["body"].getName() == "ip"
    assert answer["header"]["protectionAlg"]["algorithm"] == rfc8018.id_PBMAC1
    assert cmp_client.mac_verifies(answer, mac)
    assert not cmp_client.mac_verifies(answer, cmp_client.Pbmac1(b"another secret"))
    out = tmp_path / "pbmac1.pem"
    out.write_bytes(cmp_client.issued(answer).public_bytes(Encoding.PEM))
    check_issued(cmp_server.home, registry, out, "cmp.enrolled")


def test_a_wrong_pbmac1_mac_is_refused(cmp_server: Server, registry: Registry) -> None:
    reference, value = secret(cmp_server.home, "CMP-0011")
    wrong = cmp_client.Pbmac1(value.encode()[:-1] + b"!")
    body = cmp_client.ir_body(ec.generate_private_key(ec.SECP256R1()))
    answer = post(cmp_server, cmp_client.mac_message(body, wrong, reference))
    assert cmp_client.failure(answer) == "badMessageCheck"
    with registry.reading() as session:  # still unused: a refused MAC spends nothing
        left = session.get(CmpSecret, reference)
        assert left is not None
        assert left.uses_left == 1
    right = cmp_client.Pbmac1(value.encode())
    answer = post(cmp_server, cmp_client.mac_message(body, right, reference, implicit=True))
    assert answer["body"].getName() == "ip"


def test_ir_over_tls(server: Server, registry: Registry, tmp_path: Path) -> None:
    """openssl cmp over HTTPS against the TLS ``keyfab serve``, checking its certificate."""
    reference, value = secret(server.home, "CMP-0012")
    out = tmp_path / "tls.pem"
    done = openssl_cmp(
        server,
        *("-tls_used", "-tls_trusted", str(server.trust)),
        *mac_ir(reference, value, new_key(tmp_path / "k.pem"), out),
    )
    assert done.returncode == 0, done.stdout
    check_issued(server.home, registry, out, "cmp.enrolled")
    untrusted = tmp_path / "other.pem"  # a TLS anchor that did not sign the server: refused
    untrusted.write_bytes(new_self_signed().public_bytes(Encoding.PEM))
    refused = openssl_cmp(
        server,
        *("-tls_used", "-tls_trusted", str(untrusted)),
        *("-cmd", "genm", "-ref", reference, "-secret", f"pass:{value}"),
    )
    assert refused.returncode != 0
    assert "certificate verify failed" in refused.stdout


def new_self_signed() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not keyfab")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
