"""Attack: get a certificate from the manufacturing CA for a weak key or a SHA-1 CSR.

Before the key policy, EST issued for RSA-512, RSA-1024, secp192r1 and
secp256k1 CSRs. Every request here goes through the real EST path (the FastAPI
app, its CSR parsing and problem documents); the last tests show the CA itself
refuses, so no issuer can go around the policy.
"""

from __future__ import annotations

import base64
import secrets
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.testclient import TestClient

from keyfab import pki
from keyfab.authority import Authority, Role, credentials
from keyfab.registry import queries
from keyfab.rot.soft import SoftRotWarning
from keyfab.server import create_app
from keyfab.workspace import Workspace
from tests.server.conftest import make_tokens, make_workspace
from tests.server.est_client import subject

ENROL = "/.well-known/est/simpleenroll"
ECDSA_WITH_SHA1 = bytes.fromhex("06072a8648ce3d0401")
SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b0500")

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _der(tag: int, body: bytes) -> bytes:
    """One DER TLV (definite length), enough to hand-build the CSRs below."""
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _csr_der(tbs: bytes, algorithm: bytes, signature: bytes) -> bytes:
    return _der(0x30, tbs + _der(0x30, algorithm) + _der(0x03, b"\x00" + signature))


def _probable_prime(bits: int) -> int:
    """A random prime of ``bits`` bits (Fermat test: enough for a throwaway test key)."""
    while True:
        n = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if n % 65537 != 1 and all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17)):
            return n


def _rsa_512() -> rsa.RSAPrivateKey:
    """RSA-512, which ``cryptography`` will no longer generate but still loads and uses."""
    p, q, e = _probable_prime(256), _probable_prime(256), 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key()


def _csr(key: SigningKey, serial: str) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject(serial))
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _sha1_csr(serial: str) -> bytes:
    """A CSR over P-256 signed with ECDSA-SHA1 (``cryptography`` refuses to build one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    tbs = x509.load_der_x509_csr(_csr(key, serial)).tbs_certrequest_bytes
    return _csr_der(tbs, ECDSA_WITH_SHA1, key.sign(tbs, ec.ECDSA(hashes.SHA1())))


def _huge_rsa_csr(serial: str) -> bytes:
    """A CSR for an RSA-8704 key whose signature is garbage: the size must be refused first."""
    modulus = secrets.randbits(8704) | (1 << 8703) | 1
    spki = rsa.RSAPublicNumbers(65537, modulus).public_key()
    info = _der(0x02, b"\x00") + subject(serial).public_bytes()
    info += spki.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tbs = _der(0x30, info + _der(0xA0, b""))
    return _csr_der(tbs, SHA256_WITH_RSA, secrets.token_bytes(8704 // 8))


WEAK: dict[str, tuple[Callable[[], SigningKey], str]] = {
    "rsa-512": (_rsa_512, "key refused: RSA-512 is below the 2048-bit minimum"),
    "rsa-1024": (
        lambda: rsa.generate_private_key(65537, 1024),
        "key refused: RSA-1024 is below the 2048-bit minimum",
    ),
    "secp192r1": (
        lambda: ec.generate_private_key(ec.SECP192R1()),
        "key refused: curve secp192r1 is not allowed (P-256, P-384)",
    ),
    "secp256k1": (
        lambda: ec.generate_private_key(ec.SECP256K1()),
        "key refused: curve secp256k1 is not allowed (P-256, P-384)",
    ),
    "secp521r1": (
        lambda: ec.generate_private_key(ec.SECP521R1()),
        "key refused: curve secp521r1 is not allowed (P-256, P-384)",
    ),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("keypolicy") / "home"
    make_workspace(home)
    return home


@pytest.fixture(scope="module")
def api(home: Path) -> Iterator[TestClient]:
    token = make_tokens(Workspace(home))[Role.OPERATOR]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        app = create_app(Workspace(home))
        with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
            yield client


def _enrol(api: TestClient, der: bytes) -> tuple[int, dict[str, object]]:
    answer = api.post(
        ENROL, content=base64.encodebytes(der), headers={"Content-Type": "application/pkcs10"}
    )
    body = answer.json() if answer.status_code >= 400 else {}
    return answer.status_code, body


def _refused(api: TestClient, der: bytes, serial: str, slug: str, detail: str) -> None:
    status, problem = _enrol(api, der)
    assert status == 400, problem
    assert problem["type"] == f"urn:keyfab:problem:{slug}"
    assert problem["detail"] == detail
    assert api.get(f"/api/v1/devices/{serial}").status_code == 404, "nothing recorded"


@pytest.mark.parametrize("kind", sorted(WEAK))
def test_est_refuses_weak_keys(api: TestClient, kind: str) -> None:
    make_key, detail = WEAK[kind]
    serial = f"WEAK-{kind}"
    _refused(api, _csr(make_key(), serial), serial, "key-not-allowed", detail)


def test_est_refuses_oversized_rsa_before_verifying(api: TestClient) -> None:
    detail = "key refused: RSA-8704 is above the 8192-bit maximum"
    _refused(api, _huge_rsa_csr("WEAK-huge"), "WEAK-huge", "key-not-allowed", detail)


def test_est_refuses_ed25519(api: TestClient) -> None:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject("WEAK-ed"))
    csr = builder.sign(ed25519.Ed25519PrivateKey.generate(), None)
    der = csr.public_bytes(serialization.Encoding.DER)
    status, problem = _enrol(api, der)
    assert (status, problem["type"]) == (400, "urn:keyfab:problem:key-not-allowed")
    assert str(problem["detail"]).startswith("key refused: Ed25519 is not allowed")


def test_est_refuses_sha1_csr(api: TestClient) -> None:
    der = _sha1_csr("WEAK-sha1")
    assert isinstance(x509.load_der_x509_csr(der).signature_hash_algorithm, hashes.SHA1)
    _refused(api, der, "WEAK-sha1", "signature-not-allowed", "CSR refused: signed with SHA-1")


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(65537, 2048),
    ],
    ids=["p256", "p384", "rsa-2048"],
)
def test_est_still_issues_for_allowed_keys(
    api: TestClient, make_key: Callable[[], SigningKey]
) -> None:
    serial = f"GOOD-{secrets.token_hex(4)}"
    status, problem = _enrol(api, _csr(make_key(), serial))
    assert status == 200, problem


def test_the_ca_itself_refuses_weak_keys(
    ca_pair: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
) -> None:
    """``CertificateAuthority.issue`` is where every issuer ends: it refuses on its own."""
    _, manufacturing = ca_pair
    for make_key, detail in WEAK.values():
        with pytest.raises(pki.KeyNotAllowedError) as refused:
            manufacturing.issue(pki.ldevid(subject("CA-1")), make_key().public_key())
        assert str(refused.value) == detail
        assert refused.value.slug == "key-not-allowed"


def test_no_issuer_records_a_weak_key(home: Path) -> None:
    """A manifest signer (a key from outside) for RSA-1024: refused, nothing recorded."""
    weak = rsa.generate_private_key(65537, 1024).public_key()
    with Authority.open(Workspace(home)) as authority:
        before = len(queries.issued_certificates(authority.registry))
        with pytest.raises(pki.KeyNotAllowedError, match="RSA-1024"):
            credentials.issue_manifest_signer(authority, weak, "weak", "soft:memory")
        assert len(queries.issued_certificates(authority.registry)) == before


def test_check_csr_refuses_sha1_before_the_signature() -> None:
    with pytest.raises(pki.KeyNotAllowedError, match=r"^CSR refused: signed with SHA-1$"):
        pki.check_csr(x509.load_der_x509_csr(_sha1_csr("CSR-1")))
