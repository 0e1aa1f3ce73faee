"""The OCSP responder in process: statuses, nonces, the cache, the signer, bad input.

Responses are read back with ``cryptography``'s own OCSP parser and their
signatures checked against the signer certificate, which is checked against
the CA: the responder's word is never taken for itself. The same answers over
HTTP, judged by ``openssl ocsp`` and pkilint, are in tests/server/test_ocsp.py.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp as x509_ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfab import pki
from keyfab.authority import Authority, issue_station, publication, revoke_certificate
from keyfab.authority import ocsp as responder_module
from keyfab.authority.ocsp import Responder
from keyfab.errors import ConfigError
from keyfab.pki import ocsp
from keyfab.securefile import write_secret
from keyfab.workspace import Workspace

Status = x509_ocsp.OCSPCertStatus


@pytest.fixture
def authority(workspace: Workspace) -> Authority:
    opened = Authority.open(workspace)
    yield opened  # type: ignore[misc]
    opened.close()


@pytest.fixture
def device(authority: Authority) -> x509.Certificate:
    """A recorded end-entity certificate of the manufacturing CA (a station's)."""
    return issue_station(authority, "line-1").certificate


def request_der(
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = x509_ocsp.OCSPRequestBuilder().add_certificate(
        certificate, issuer, algorithm or hashes.SHA1()
    )
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def checked(der: bytes, ca: x509.Certificate) -> x509_ocsp.OCSPResponse:
    """The response, once its signer is proven a delegate of ``ca`` and its signature holds."""
    response = x509_ocsp.load_der_ocsp_response(der)
    assert response.response_status is x509_ocsp.OCSPResponseStatus.SUCCESSFUL
    (signer,) = response.certificates
    signer.verify_directly_issued_by(ca)
    usage = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    assert signer.extensions.get_extension_for_class(x509.OCSPNoCheck)
    public = signer.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert response.signature_hash_algorithm is not None
    public.verify(
        response.signature,
        response.tbs_response_bytes,
        ec.ECDSA(response.signature_hash_algorithm),
    )
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(public).digest
    return response


def status_of(der: bytes) -> x509_ocsp.OCSPResponseStatus:
    return x509_ocsp.load_der_ocsp_response(der).response_status


def test_good_revoked_and_unknown(
    authority: Authority, workspace: Workspace, device: x509.Certificate
) -> None:
    ca = authority.certificate
    responder = Responder.open(authority, workspace.home)
    good = checked(responder.respond(request_der(device, ca)).der, ca)
    assert good.certificate_status is Status.GOOD
    assert good.serial_number == device.serial_number
    assert good.next_update_utc is not None
    assert good.this_update_utc < good.next_update_utc

    revoke_certificate(
        authority, pki.serial_hex(device), pki.RevocationReason.KEY_COMPROMISE, by="test"
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the cache notices within FRESHNESS
        answer = checked(responder.respond(request_der(device, ca)).der, ca)
        if answer.certificate_status is Status.REVOKED:
            break
        time.sleep(0.05)
    assert answer.certificate_status is Status.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.key_compromise
    assert answer.revocation_time_utc is not None

    stranger = issue_station(authority, "line-2").certificate
    # The same CertID with a serial the CA never recorded:
    fake = request_der(stranger, ca).replace(
        stranger.serial_number.to_bytes(20, "big"), (stranger.serial_number ^ 1).to_bytes(20, "big")
    )
    unknown = checked(responder.respond(fake).der, ca)
    assert unknown.certificate_status is Status.UNKNOWN
    assert responder.respond(fake).max_age is None  # unknown answers are never cached


def test_cached_without_nonce_fresh_with_nonce(
    authority: Authority, workspace: Workspace, device: x509.Certificate
) -> None:
    responder = Responder.open(authority, workspace.home)
    plain = request_der(device, authority.certificate)
    first = responder.respond(plain)
    assert first.max_age is not None
    assert first.max_age > 3600
    assert responder.respond(plain).der == first.der  # signed once, served again
    assert responder.from_memory(plain) == responder.respond(plain)

    nonce = bytes(range(32))
    with_nonce = request_der(device, authority.certificate, nonce)
    answer = responder.respond(with_nonce)
    assert answer.max_age is None
    assert responder.from_memory(with_nonce) is None
    parsed = checked(answer.der, authority.certificate)
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert responder.respond(with_nonce).der != answer.der  # a fresh signature each time


def test_answers_found_by_request_bytes_follow_revocations(
    authority: Authority, workspace: Workspace, device: x509.Certificate
) -> None:
    """The server's hot path (``from_memory``, by request bytes) never outlives a revocation."""
    ca = authority.certificate
    responder = Responder.open(authority, workspace.home)
    asked = request_der(device, ca)
    other = request_der(device, ca, None, hashes.SHA256())  # cached too, but not asked again
    for der in (asked, other):
        first = responder.respond(der)
        hit = responder.from_memory(der)
        assert hit is not None
        assert hit.der == first.der

    revoke_certificate(
        authority, pki.serial_hex(device), pki.RevocationReason.SUPERSEDED, by="test"
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # as the server does: memory first, else respond
        answer = responder.from_memory(asked) or responder.respond(asked)
        if checked(answer.der, ca).certificate_status is Status.REVOKED:
            break
        time.sleep(0.05)
    assert checked(answer.der, ca).certificate_status is Status.REVOKED
    again = responder.from_memory(asked)
    assert again is not None  # the revoked answer is cached in turn
    assert checked(again.der, ca).certificate_status is Status.REVOKED
    assert responder.from_memory(other) is None  # dropped with the rest: signed again when asked


@pytest.mark.parametrize("algorithm", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_certid_hashes_other_than_sha1(
    authority: Authority,
    workspace: Workspace,
    device: x509.Certificate,
    algorithm: hashes.HashAlgorithm,
) -> None:
    responder = Responder.open(authority, workspace.home)
    answer = checked(
        responder.respond(request_der(device, authority.certificate, None, algorithm)).der,
        authority.certificate,
    )
    assert answer.certificate_status is Status.GOOD
    assert answer.hash_algorithm.name == algorithm.name


@pytest.mark.parametrize("size", [0, 33, 100])
def test_nonce_outside_rfc8954_is_malformed(
    authority: Authority, workspace: Workspace, device: x509.Certificate, size: int
) -> None:
    responder = Responder.open(authority, workspace.home)
    der = request_der(device, authority.certificate, b"\x01" * size)
    assert status_of(responder.respond(der).der) is x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_bad_input_gets_ocsp_errors(
    authority: Authority, workspace: Workspace, device: x509.Certificate
) -> None:
    responder = Responder.open(authority, workspace.home)
    good = request_der(device, authority.certificate)
    malformed = x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    for der in (b"", b"garbage", good[:-3], good + b"\x00", b"\x30" * (ocsp.MAX_REQUEST + 1)):
        assert status_of(responder.respond(der).der) is malformed, der[:16]
    # A CertID of the root (which answers for nobody here): unauthorized.
    root = authority.chain[1]
    for_root = request_der(authority.certificate, root)
    assert status_of(responder.respond(for_root).der) is x509_ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_internal_problems_are_internal_error(
    authority: Authority,
    workspace: Workspace,
    device: x509.Certificate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    responder = Responder.open(authority, workspace.home)

    def broken(*args: object) -> None:
        raise RuntimeError("database gone")

    monkeypatch.setattr(responder_module.queries, "status", broken)
    answer = responder.respond(request_der(device, authority.certificate, b"n"))
    assert status_of(answer.der) is x509_ocsp.OCSPResponseStatus.INTERNAL_ERROR


def _signer(home: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate((home / "ocsp" / "manufacturing.pem").read_bytes())


def test_signer_is_shared_recorded_and_rotated(authority: Authority, workspace: Workspace) -> None:
    Responder.open(authority, workspace.home)
    first = _signer(workspace.home)
    assert (workspace.home / "ocsp" / "manufacturing.key").stat().st_mode & 0o777 == 0o600
    Responder.open(authority, workspace.home)  # a second worker of the same home
    assert _signer(workspace.home) == first
    lifetime = first.not_valid_after_utc - first.not_valid_before_utc
    assert lifetime <= datetime.timedelta(days=7, minutes=5)
    recorded = pki.serial_hex(first)
    assert any(c.serial_number == recorded for c in authority_certificates(authority))

    # A signer about to expire (here: one signed by a throw-away key) is replaced.
    key = ec.generate_private_key(ec.SECP256R1())
    stale = (
        x509.CertificateBuilder()
        .subject_name(first.subject)
        .issuer_name(first.issuer)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(first.not_valid_before_utc)
        .not_valid_after(first.not_valid_before_utc + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    folder = workspace.home / "ocsp"
    write_secret(
        folder / "manufacturing.pem", stale.public_bytes(serialization.Encoding.PEM), replace=True
    )
    write_secret(
        folder / "manufacturing.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        replace=True,
    )
    Responder.open(authority, workspace.home)
    renewed = _signer(workspace.home)
    assert renewed != first
    assert renewed != stale
    renewed.verify_directly_issued_by(authority.certificate)


def test_revoked_signer_is_replaced(authority: Authority, workspace: Workspace) -> None:
    Responder.open(authority, workspace.home)
    first = _signer(workspace.home)
    revoke_certificate(
        authority, pki.serial_hex(first), pki.RevocationReason.KEY_COMPROMISE, by="test"
    )
    Responder.open(authority, workspace.home)
    assert _signer(workspace.home) != first


def authority_certificates(authority: Authority) -> list[object]:
    from keyfab.registry import queries

    return list(queries.issued_certificates(authority.registry, pki.Profile.OCSP_SIGNER))


def test_publication_urls_go_into_later_certificates_only(workspace: Workspace) -> None:
    with Authority.open(workspace) as before:
        plain = issue_station(before, "s-before").certificate
        settings_now = publication.configure(
            before,
            by="test",
            base_url="https://pki.example.com/",
            crl_validity=datetime.timedelta(days=3),
        )
    assert settings_now.base_url == "https://pki.example.com"
    assert settings_now.crl_validity == datetime.timedelta(days=3)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    with Authority.open(workspace) as after:
        issued = issue_station(after, "s-after").certificate
        signer = issue_ocsp(after)
        crl = after_crl(after)
    access = issued.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    urls = {(d.access_method.dotted_string, d.access_location.value) for d in access}
    assert urls == {
        ("1.3.6.1.5.5.7.48.1", "https://pki.example.com/ocsp"),
        ("1.3.6.1.5.5.7.48.2", "https://pki.example.com/ca/manufacturing.crt"),
    }
    points = issued.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in p.full_name or []] == [
        "https://pki.example.com/crl/manufacturing.crl"
    ]
    with pytest.raises(x509.ExtensionNotFound):  # the OCSP signer is checked by no one
        signer.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == datetime.timedelta(days=3)


def issue_ocsp(authority: Authority) -> x509.Certificate:
    from keyfab.authority.credentials import issue_ocsp_signer

    return issue_ocsp_signer(authority, "manufacturing").certificate


def after_crl(authority: Authority) -> x509.CertificateRevocationList:
    from keyfab.authority import new_crl

    return new_crl(authority)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"base_url": "ftp://x"}, "http"),
        ({"base_url": "https://user@x"}, "http"),
        ({"base_url": "https://x/?q=1"}, "http"),
        ({"crl_validity": datetime.timedelta(seconds=10)}, "between"),
        ({"ocsp_validity": datetime.timedelta(days=5)}, "between"),
    ],
)
def test_bad_publication_settings_are_refused(
    authority: Authority, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        publication.configure(authority, by="test", **changes)  # type: ignore[arg-type]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_mutated_requests_never_raise(
    authority: Authority, workspace: Workspace, device: x509.Certificate, data: st.DataObject
) -> None:
    responder = getattr(test_mutated_requests_never_raise, "_responder", None)
    if responder is None or responder._authority is not authority:
        responder = Responder.open(authority, workspace.home)
        test_mutated_requests_never_raise._responder = responder  # type: ignore[attr-defined]
    base = bytearray(request_der(device, authority.certificate, b"0123456789abcdef"))
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(base) - 1))
        base[where] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    answer = responder.respond(bytes(base[:cut]))
    parsed = x509_ocsp.load_der_ocsp_response(answer.der)
    assert parsed.response_status in {
        x509_ocsp.OCSPResponseStatus.SUCCESSFUL,
        x509_ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
        x509_ocsp.OCSPResponseStatus.UNAUTHORIZED,
    }


def test_a_retired_ca_keeps_answering_for_what_it_issued(workspace: Workspace) -> None:
    """After ``keyfab ca rotate``, a certificate of the old CA is still answered, by a
    signer that CA delegated, and its revocation shows; the new CA answers for its own."""
    from keyfab.authority import rotate

    with Authority.open(workspace) as before:
        old_ca = before.certificate
        old = issue_station(before, "line-old").certificate
        rotate(before)
    with Authority.open(workspace) as authority:
        new_ca = authority.certificate
        new = issue_station(authority, "line-new").certificate
        revoke_certificate(
            authority, pki.serial_hex(old), pki.RevocationReason.SUPERSEDED, by="test"
        )
        responder = Responder.open(authority, workspace.home)
        revoked = checked(responder.respond(request_der(old, old_ca)).der, old_ca)
        good = checked(responder.respond(request_der(new, new_ca)).der, new_ca)
        crossed = status_of(responder.respond(request_der(new, old_ca)).der)
    assert revoked.certificate_status is Status.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.superseded
    assert good.certificate_status is Status.GOOD
    # the new CA's name with the old CA's key: no CA of the workspace is both
    assert crossed is x509_ocsp.OCSPResponseStatus.UNAUTHORIZED
