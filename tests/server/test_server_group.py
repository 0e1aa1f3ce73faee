"""Group commit under load: concurrent EST enrolments on PostgreSQL keep the audit chain whole.

A real ``keyfab serve`` (2 workers, TLS) takes enrolments from many threads at
once, mixed with refusals (an unknown token, an auditor's token, a one-time
token used twice, a revoked device, a bad CSR signature), so groups commit
with members that fail beside members that succeed. Afterwards the chain,
its checkpoints and witnesses verify (``audit.verify_log``) and every
certificate a client received has its row and exactly one issuance event.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import event, select

from keyfab import audit
from keyfab.authority import Authority, Principal, Role, enrolment, revoke_device
from keyfab.authority import tokens as store
from keyfab.pki import RevocationReason, serial_hex
from keyfab.registry import AuditEvent, Certificate
from keyfab.workspace import Workspace
from tests.server.conftest import Server, free_port, make_tokens, make_workspace
from tests.server.est_client import new_csr, subject, unwrap
from tests.server.postgres import Cluster

ENROLMENTS, THREADS = 240, 48


@pytest.fixture
def factory(
    postgres: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Workspace, dict[Role, str], Server]]:
    url = postgres.create_database(f"group_{free_port()}")
    monkeypatch.setenv("KEYFAB_DATABASE_URL", url)
    space = make_workspace(tmp_path / "home")
    tokens = make_tokens(space)
    server = Server(space.home, free_port(), workers=2, env={"KEYFAB_DATABASE_URL": url})
    server.start()
    try:
        yield space, tokens, server
    finally:
        server.stop()


def _forged_csr(serial: str) -> bytes:
    """A CSR whose signature does not verify: its signature's last byte flipped."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject(serial))
    der = bytearray(csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 1
    return base64.encodebytes(bytes(der))


def _post(client: httpx.Client, token: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/pkcs10", "Authorization": f"Bearer {token}"}
    return client.post("/.well-known/est/simpleenroll", content=body, headers=headers)


@pytest.mark.slow
def test_concurrent_enrolments_keep_the_chain(
    factory: tuple[Workspace, dict[Role, str], Server],
) -> None:
    space, tokens, server = factory
    with Authority.open(space) as authority:
        once = store.create(authority, "once", Role.DEVICE, uses=1).secret
    with server.client() as client:
        assert _post(client, tokens[Role.OPERATOR], new_csr("GONE-1")[1]).status_code == 200
        with Authority.open(space) as authority:
            revoke_device(authority, "GONE-1", RevocationReason.KEY_COMPROMISE, by="test")
        plan: list[tuple[str, bytes, int]] = []
        for i in range(ENROLMENTS):
            plan.append((tokens[Role.OPERATOR], new_csr(f"G-{i:04d}")[1], 200))
            if i % 20 == 0:  # refusals mixed into the same groups
                plan.append((f"kf_{'0' * 16}_{'x' * 43}", new_csr(f"BAD-{i}")[1], 401))
                plan.append((tokens[Role.AUDITOR], new_csr(f"AUD-{i}")[1], 403))
                plan.append((tokens[Role.ADMIN], _forged_csr(f"FORGED-{i}"), 400))
                plan.append((tokens[Role.ADMIN], new_csr("GONE-1")[1], 403))
        plan += [(once, new_csr("ONCE-A")[1], 200), (once, new_csr("ONCE-B")[1], 200)]
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(lambda p: _post(client, p[0], p[1]), plan))
    statuses = Counter(a.status_code for a in answers[:-2])
    assert statuses == Counter(expected for _, _, expected in plan[:-2])
    assert sorted(a.status_code for a in answers[-2:]) == [200, 401]  # one use, then refused
    issued = [unwrap(a.content)[0] for a in answers if a.status_code == 200]
    assert len(issued) == ENROLMENTS + 1
    _every_certificate_recorded(space, issued)


def _every_certificate_recorded(space: Workspace, issued: list[x509.Certificate]) -> None:
    with Authority.open(space) as authority:
        witnesses = audit.witness.found(authority.witness)
        with authority.registry.reading() as session:
            verdict = audit.verify_log(
                session, authority.signers(), witnesses, require_witness=True
            )
            rows = dict(session.execute(select(Certificate.serial_number, Certificate.der)).all())
            events = Counter(
                json.loads(data)["serial_number"]
                for data in session.scalars(
                    select(AuditEvent.data).where(AuditEvent.kind == "certificate.issued")
                )
            )
            enrolled = Counter(
                json.loads(data)["serial_number"]
                for data in session.scalars(
                    select(AuditEvent.data).where(AuditEvent.kind == "est.enrolled")
                )
            )
    assert verdict.ok, verdict.problem
    for certificate in issued:
        number = serial_hex(certificate)
        assert rows[number] == certificate.public_bytes(serialization.Encoding.DER)
        assert events[number] == 1
        assert enrolled[number] == 1
    assert sum(enrolled.values()) == len(issued) + 1  # and GONE-1's, before it was revoked


def test_enrolment_statements(
    postgres: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new device's token enrolment: BEGIN, token, device, certificate, audit head
    (lock, events, move), COMMIT; counted on the engine, so a regression shows."""
    monkeypatch.setenv("KEYFAB_DATABASE_URL", postgres.create_database(f"count_{free_port()}"))
    space = make_workspace(tmp_path / "home")
    token = make_tokens(space)[Role.OPERATOR]
    statements: list[str] = []
    with Authority.open(space) as authority:
        for i in range(3):  # warm: CA records and policies read once per process
            enrolment.enrol_with_token(authority, token, _csr(f"WARM-{i}"), None)
        event.listen(authority.registry.engine, "before_cursor_execute", _counter(statements))
        certificate, principal = enrolment.enrol_with_token(authority, token, _csr("C-1"), None)
    assert principal == Principal("t-operator", Role.OPERATOR, token_id=principal.token_id)
    assert certificate.subject.rfc4514_string().endswith("CN=C-1,O=Acme")
    assert [s.split()[0] for s in statements] == ["SELECT", "INSERT", "INSERT", "SELECT",
                                                  "INSERT", "UPDATE"]  # fmt: skip


def _csr(serial: str) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject(serial))
    return builder.sign(key, hashes.SHA256())


def _counter(into: list[str]):  # type: ignore[no-untyped-def]
    def before(conn: object, cursor: object, statement: str, *args: object) -> None:
        into.append(statement.strip())

    return before
