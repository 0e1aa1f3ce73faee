"""EST (RFC 7030) as a device script drives it: openssl makes keys and CSRs, curl talks
to the service, openssl unwraps and verifies; responses are parsed with pyasn1-modules,
an ASN.1 library independent of keyfab's own code.
"""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AttributeOID
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc5280, rfc5652, rfc7030

from keyfab.authority import Authority, Role
from keyfab.authority import tokens as store
from tests.server.conftest import Server
from tests.server.est_client import issued_subject, new_csr, subject, unwrap

EST = "/.well-known/est"


def run(*args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(args, input=data, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


class Device:
    """A device with openssl and curl: its key, CSR and certificates are files."""

    def __init__(self, server: Server, folder: Path, serial: str, subj: str = "/O=Acme/CN=gateway"):
        self.server, self.folder, self.serial = server, folder, serial
        folder.mkdir(parents=True, exist_ok=True)
        self.key = folder / "device.key"
        run(
            "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-keyout", str(self.key),
            "-subj", f"{subj}/serialNumber={serial}",
            "-outform", "DER", "-out", str(folder / "csr.der"),
        )  # fmt: skip
        (folder / "csr.b64").write_bytes(base64.encodebytes((folder / "csr.der").read_bytes()))

    def curl(self, path: str, *extra: str, body: Path | None = None) -> tuple[int, bytes]:
        out = self.folder / "answer"
        args = ["curl", "-sS", "--cacert", str(self.server.root), "-o", str(out)]
        args += ["-w", "%{http_code}", *extra]
        if body is not None:
            args += ["-H", "Content-Type: application/pkcs10", "--data-binary", f"@{body}"]
        status = int(run(*args, f"{self.server.url}{EST}/{path}"))
        return status, out.read_bytes()

    def enrol(self, user: str, token: str) -> tuple[int, bytes]:
        return self.curl("simpleenroll", "-u", f"{user}:{token}", body=self.folder / "csr.b64")

    def reenrol(self, certificate: Path, csr: Path | None = None) -> tuple[int, bytes]:
        tls = ("--cert", str(certificate), "--key", str(self.key))
        return self.curl("simplereenroll", *tls, body=csr or self.folder / "csr.b64")

    def save_certificate(self, answer: bytes, name: str) -> Path:
        """Unwrap the certs-only PKCS#7 with openssl, as a device script does."""
        der = base64.b64decode(answer)
        pem = run("openssl", "pkcs7", "-inform", "DER", "-print_certs", data=der)
        path = self.folder / name
        path.write_bytes(pem)
        return path

    def verify(self, certificate: Path) -> None:
        chain = self.folder / "chain.pem"
        chain.write_bytes(self.server.trust.read_bytes())
        out = run(
            "openssl", "verify", "-CAfile", str(self.server.root), "-untrusted", str(chain),
            str(certificate),
        )  # fmt: skip
        assert out.decode().strip().endswith(": OK")


def certificates_in(answer: bytes) -> list[rfc5280.Certificate]:
    """Decode a certs-only answer with pyasn1-modules: ContentInfo -> SignedData."""
    info, rest = decoder.decode(base64.b64decode(answer), asn1Spec=rfc5652.ContentInfo())
    assert not rest
    assert info["contentType"] == rfc5652.id_signedData
    signed, rest = decoder.decode(info["content"], asn1Spec=rfc5652.SignedData())
    assert not rest
    assert len(signed["signerInfos"]) == 0  # certs-only: a degenerate SignedData
    assert signed["encapContentInfo"]["eContentType"] == rfc5652.id_data
    return [c["certificate"] for c in signed["certificates"]]


def subject_serial(certificate: rfc5280.Certificate) -> str:
    for rdn in certificate["tbsCertificate"]["subject"][0]:
        for attribute in rdn:
            if attribute["type"] == rfc5280.id_at_serialNumber:
                value, _ = decoder.decode(attribute["value"], asn1Spec=rfc5280.X520SerialNumber())
                return str(value)
    raise AssertionError("no serialNumber")


@pytest.fixture
def device_token(authority: Authority, request: pytest.FixtureRequest) -> tuple[str, str]:
    """(name, token) of a one-time device token for serial EST-0001."""
    name = f"est-{request.node.name[:40]}"
    token = store.create(authority, name, Role.DEVICE, uses=1, device_serial="EST-0001")
    return token.name, token.secret


def test_cacerts_with_curl_and_openssl(server: Server, tmp_path: Path) -> None:
    device = Device(server, tmp_path, "EST-CA")
    status, answer = device.curl("cacerts")
    assert status == 200
    chain = device.save_certificate(answer, "cacerts.pem")
    assert run("grep", "-c", "BEGIN CERTIFICATE", str(chain)).strip() == b"2"
    parsed = certificates_in(answer)
    assert len(parsed) == 2


def test_csrattrs_parse_as_rfc7030(server: Server) -> None:
    with server.client() as client:
        answer = client.get(f"{EST}/csrattrs")
    assert answer.headers["content-type"] == "application/csrattrs"
    attrs, rest = decoder.decode(base64.b64decode(answer.content), asn1Spec=rfc7030.CsrAttrs())
    assert not rest
    oids = {str(a["oid"]) for a in attrs if a.getName() == "oid"}
    assert AttributeOID.CHALLENGE_PASSWORD.dotted_string in oids
    (key_attr,) = [a["attribute"] for a in attrs if a.getName() == "attribute"]
    assert str(key_attr["attrType"]) == "1.2.840.10045.2.1"


def test_bootstrap_enrol_reenrol_and_revocation(
    server: Server, admin: httpx.Client, tmp_path: Path, device_token: tuple[str, str]
) -> None:
    device = Device(server, tmp_path, "EST-0001")
    status, answer = device.enrol(*device_token)
    assert status == 200, answer
    first = device.save_certificate(answer, "first.pem")
    device.verify(first)
    (parsed,) = certificates_in(answer)  # only the issued certificate
    assert subject_serial(parsed) == "EST-0001"

    status, answer = device.enrol(*device_token)  # one-time token: used up
    assert status == 401
    assert b"token used up" in answer

    status, answer = device.reenrol(first)  # a token's device has the default policy
    assert status == 403
    assert b"renewal-not-due" in answer

    other = Device(server, tmp_path / "other", "EST-9999")  # same key holder, other subject
    other.key.write_bytes(device.key.read_bytes())
    run(
        "openssl", "req", "-new", "-key", str(device.key), "-subj",
        "/O=Acme/CN=gateway/serialNumber=EST-9999", "-outform", "DER",
        "-out", str(tmp_path / "other.der"),
    )  # fmt: skip
    (tmp_path / "other.b64").write_bytes(base64.encodebytes((tmp_path / "other.der").read_bytes()))
    status, answer = device.reenrol(first, tmp_path / "other.b64")
    assert status == 403
    assert b"subject-mismatch" in answer

    assert admin.post("/api/v1/devices/EST-0001/revoke").status_code == 200
    status, answer = device.reenrol(first)
    assert status == 403
    assert b"device-revoked" in answer
    certificates = admin.get("/api/v1/devices/EST-0001").json()["certificates"]
    assert len(certificates) == 1  # nothing was issued after the refusals
    assert all(c["revoked_at"] for c in certificates)


def test_subject_comes_from_policy_not_the_csr(
    server: Server, tokens: dict[Role, str], tmp_path: Path
) -> None:
    """O and OU in the CSR are ignored: O is the CA's, CN and serialNumber the serial."""
    device = Device(server, tmp_path, "EST-EVIL", subj="/O=Evil Corp/OU=x/CN=whatever")
    status, answer = device.enrol("t-operator", tokens[Role.OPERATOR])
    assert status == 200, answer
    issued = device.save_certificate(answer, "issued.pem")
    device.verify(issued)
    certificate = x509.load_pem_x509_certificate(issued.read_bytes())
    assert certificate.subject == issued_subject("EST-EVIL")
    # renewal keeps the current subject whatever the CSR says: test_server_ldevid.py


def test_bound_token_enrols_only_its_serial(
    server: Server, tmp_path: Path, device_token: tuple[str, str]
) -> None:
    status, answer = Device(server, tmp_path, "EST-0002").enrol(*device_token)
    assert status == 403
    assert b"may not enrol that device" in answer


def test_reenrol_without_client_certificate_is_refused(server: Server, tmp_path: Path) -> None:
    device = Device(server, tmp_path, "EST-0003")
    status, answer = device.curl("simplereenroll", body=tmp_path / "csr.b64")
    assert status == 401
    assert b"mutual TLS" in answer


@pytest.mark.parametrize(
    ("body", "content_type", "status", "kind"),
    [
        (b"%%% not base64 %%%", "application/pkcs10", 400, "malformed-base64"),
        (b"QUJD", "application/pkcs10", 400, "malformed-csr"),
        (b"", "application/pkcs10", 400, "malformed-csr"),
        (b"MIIB", "application/json", 415, "unsupported-media-type"),
        (b"A" * 70_000, "application/pkcs10", 413, "payload-too-large"),
    ],
)
def test_bad_enrolment_bodies(
    server: Server, tokens: dict[Role, str], body: bytes, content_type: str, status: int, kind: str
) -> None:
    with server.client(tokens[Role.OPERATOR]) as client:
        answer = client.post(
            f"{EST}/simpleenroll", content=body, headers={"Content-Type": content_type}
        )
    assert answer.status_code == status
    assert answer.json()["type"] == f"urn:keyfab:problem:{kind}"


def test_csr_without_proof_of_possession_or_serial(server: Server, tokens: dict[Role, str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject("EST-0004"))
    der = bytearray(csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # corrupt the signature: the CSR no longer proves the key
    no_serial = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    )
    cases = (
        (bytes(der), "proof-of-possession-failed"),
        (no_serial.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER),
         "subject-not-allowed"),
    )  # fmt: skip
    with server.client(tokens[Role.OPERATOR]) as client:
        for raw, kind in cases:
            answer = client.post(
                f"{EST}/simpleenroll",
                content=base64.encodebytes(raw),
                headers={"Content-Type": "application/pkcs10"},
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["type"] == f"urn:keyfab:problem:{kind}"
        assert client.get("/api/v1/devices/EST-0004").status_code == 404


def _post_on(tls: ssl.SSLSocket, host: str, token: str, csr: bytes) -> tuple[int, bytes]:
    request = (
        f"POST {EST}/simpleenroll HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/pkcs10\r\n"
        f"Content-Length: {len(csr)}\r\nConnection: close\r\n\r\n"
    ).encode()
    tls.sendall(request + csr)
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("bound", [True, False])
def test_tls_unique_binding(server: Server, tokens: dict[Role, str], bound: bool) -> None:
    """Over TLS 1.2 a CSR carrying this session's tls-unique enrols; another session's fails."""
    context = server.context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    key = ec.generate_private_key(ec.SECP256R1())
    serial = f"EST-TLSU-{bound}"
    with (
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        unique = tls.get_channel_binding("tls-unique")
        assert unique is not None
        binding = base64.b64encode(unique if bound else bytes(len(unique)))
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject(serial))
            .add_attribute(AttributeOID.CHALLENGE_PASSWORD, binding)
            .sign(key, hashes.SHA256())
        )
        body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
        status, answer = _post_on(tls, "127.0.0.1", tokens[Role.OPERATOR], body)
    if bound:
        assert status == 200, answer
        assert unwrap(answer)[0].subject == issued_subject(serial)
    else:
        assert status == 400
        assert b"tls-unique-mismatch" in answer


def test_tls_unique_binding_refused_over_tls13(server: Server, tokens: dict[Role, str]) -> None:
    """TLS 1.3 has no tls-unique: a CSR claiming a binding cannot be checked, so it is refused."""
    context = server.context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject("EST-TLS13"))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, base64.b64encode(bytes(12)))
        .sign(key, hashes.SHA256())
    )
    body = base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))
    with (
        socket.create_connection(("127.0.0.1", server.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        status, answer = _post_on(tls, "127.0.0.1", tokens[Role.OPERATOR], body)
    assert status == 400
    assert b"tls-unique-unavailable" in answer


def test_one_time_token_raced_enrols_once(server: Server, authority: Authority) -> None:
    """Eight devices racing on one one-time token: exactly one certificate is issued."""
    token = store.create(authority, "race", Role.DEVICE, uses=1).secret
    bodies = [new_csr(f"RACE-{i}")[1] for i in range(8)]

    def enrol(body: bytes) -> int:
        with server.client(token) as client:
            answer = client.post(
                f"{EST}/simpleenroll", content=body, headers={"Content-Type": "application/pkcs10"}
            )
        return answer.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(enrol, bodies))
    assert statuses == [200] + [401] * 7
    with server.client(tokens_admin(authority)) as admin:
        found = [admin.get(f"/api/v1/devices/RACE-{i}").status_code for i in range(8)]
    assert sorted(found) == [200] + [404] * 7  # the refused ones left no device row


def tokens_admin(authority: Authority) -> str:
    return store.create(authority, f"admin-{time.monotonic_ns()}", Role.ADMIN).secret


def test_chunked_body_over_the_limit_is_413(server: Server, tokens: dict[Role, str]) -> None:
    """No Content-Length (chunked): the limit is enforced while the body streams in."""

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"A" * 1024

    with server.client(tokens[Role.OPERATOR]) as client:
        answer = client.post(
            f"{EST}/simpleenroll", content=chunks(), headers={"Content-Type": "application/pkcs10"}
        )
    assert answer.status_code == 413
    assert answer.json()["type"] == "urn:keyfab:problem:payload-too-large"


def test_unbound_device_token_enrols_only_new_devices(
    server: Server, tokens: dict[Role, str]
) -> None:
    """A fleet-wide device token brings in new serials but cannot re-key a known device."""
    with server.client(tokens[Role.DEVICE]) as client:
        first = client.post(
            f"{EST}/simpleenroll",
            content=new_csr("FLEET-1")[1],
            headers={"Content-Type": "application/pkcs10"},
        )
        second = client.post(
            f"{EST}/simpleenroll",
            content=new_csr("FLEET-1")[1],
            headers={"Content-Type": "application/pkcs10"},
        )
    assert first.status_code == 200, first.text
    assert second.status_code == 403
    assert second.json()["type"] == "urn:keyfab:problem:device-exists"
