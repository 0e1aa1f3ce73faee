"""The authority's promises, through the CLI and the API on one workspace.

One home for every operation means the CLI and the API cannot drift: a second
revocation is a reported no-op on both, reasons outside RFC 5280 are refused on
both, CRLNumbers increase strictly however the two interleave, and every
certificate keyfab issues, from all five issuers, is in the registry. Read-only
paths never take SQLite's write lock.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import Engine, event, select
from starlette.testclient import TestClient

from keyfab import audit
from keyfab.authority import Authority, Principal, Role, enrolment
from keyfab.pki import Profile, serial_hex
from keyfab.provision import create_batch, run_batch
from keyfab.registry import AuditEvent, queries
from keyfab.rot.soft import SoftRotWarning
from keyfab.server import create_app, server_files
from keyfab.workspace import Workspace
from tests.conftest import Keyfab
from tests.server.conftest import RECIPE, make_tokens, make_workspace
from tests.server.est_client import subject

BATCH = "drift"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("authority") / "home"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        space = make_workspace(home)
        create_batch(space, RECIPE, home, BATCH, 4)
        run_batch(space, BATCH)
    return home


@pytest.fixture(scope="module")
def admin_token(home: Path) -> str:
    return make_tokens(Workspace(home))[Role.ADMIN]


@pytest.fixture(scope="module")
def app(home: Path) -> Iterator[FastAPI]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SoftRotWarning)
        yield create_app(Workspace(home))


@pytest.fixture
def api(app: FastAPI, admin_token: str) -> Iterator[TestClient]:
    with TestClient(app, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


@pytest.fixture
def cli(home: Path) -> Keyfab:
    return Keyfab(home)


def _serials(home: Path) -> list[str]:
    registry = Workspace(home).registry()
    try:
        return [
            row.device.serial
            for row in queries.device_page(registry, batch=BATCH, limit=1000).items
        ]
    finally:
        registry.dispose()


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_revoking_twice_is_a_reported_noop_on_cli_and_api(
    home: Path, cli: Keyfab, api: TestClient
) -> None:
    first, second = _serials(home)[:2]
    code, out, _ = cli("devices", "revoke", first, "--reason", "superseded")
    assert code == 0
    assert "reason superseded" in out
    code, out, _ = cli("devices", "revoke", first, "--reason", "keyCompromise")
    assert (code, "already revoked: nothing changed" in out) == (0, True)
    again = api.post(f"/api/v1/devices/{first}/revoke", json={"reason": "keyCompromise"})
    assert again.status_code == 200
    assert (again.json()["changed"], again.json()["revoked_certificates"]) == (False, [])
    shown = json.loads(cli("devices", "show", first, "--json")[1])
    assert shown["certificates"][0]["revocation_reason"] == "superseded"  # the first one stands

    done = api.post(f"/api/v1/devices/{second}/revoke", json={"reason": "cessationOfOperation"})
    assert done.json()["changed"] is True
    code, out, _ = cli("devices", "revoke", second)
    assert (code, "nothing changed" in out) == (0, True)
    registry = Workspace(home).registry()
    try:
        with registry.reading() as session:
            report = audit.verify(session)
    finally:
        registry.dispose()
    assert report.ok


@pytest.mark.parametrize("reason", ["stolen", "certificateHold", "removeFromCRL", "key compromise"])
def test_reasons_outside_rfc5280_are_refused(
    home: Path, cli: Keyfab, api: TestClient, reason: str
) -> None:
    serial = _serials(home)[3]
    code, _, err = cli("devices", "revoke", serial, "--reason", reason)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "revocation reason" in err or "reason" in err
    answer = api.post(f"/api/v1/devices/{serial}/revoke", json={"reason": reason})
    assert answer.status_code in (400, 422)
    assert answer.headers["content-type"] == "application/problem+json"
    shown = json.loads(cli("devices", "show", serial, "--json")[1])
    assert shown["state"] == "provisioned"  # nothing was written


def test_crl_numbers_strictly_increase_when_cli_and_api_interleave(
    home: Path, cli: Keyfab, api: TestClient, tmp_path: Path
) -> None:
    serial = _serials(home)[2]
    seen: list[tuple[int, bytes]] = []

    def from_cli() -> None:
        out = tmp_path / f"crl-{len(seen)}.der"
        assert cli("ca", "crl", "--der", "--out", str(out))[0] == 0
        seen.append((_crl_number(x509.load_der_x509_crl(out.read_bytes())), out.read_bytes()))

    def from_api() -> None:
        der = api.get("/api/v1/ca/crl").content
        seen.append((_crl_number(x509.load_der_x509_crl(der)), der))

    from_cli()
    from_api()  # nothing changed: the same CRL again, not a new number
    assert seen[1] == seen[0]
    assert api.post(f"/api/v1/devices/{serial}/revoke", json={"reason": "keyCompromise"}).is_success
    from_api()  # a revocation since: a new CRL
    from_cli()
    from_api()
    from_cli()
    numbers = [number for number, _ in seen]
    distinct = list(dict.fromkeys(numbers))
    assert distinct == sorted(distinct)
    assert len(distinct) == 4
    by_number: dict[int, bytes] = {}
    for number, der in seen:
        assert by_number.setdefault(number, der) == der  # a number is never reused
    newest = x509.load_der_x509_crl(seen[-1][1])
    listed = newest.get_revoked_certificate_by_serial_number(
        int(queries.device(Workspace(home).registry(), serial).certificates[0].serial_number, 16)
    )
    assert listed is not None
    reason = listed.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise


def test_manifest_signer_is_listed_revocable_and_on_the_crl(
    home: Path, cli: Keyfab, tmp_path: Path
) -> None:
    key = tmp_path / "signer.pem"
    code, _, err = cli(
        "manifest", "signer", "--key", f"soft:{key}", "--new", "--out", str(tmp_path / "s.crt")
    )
    assert code == 0, err
    number = serial_hex(x509.load_pem_x509_certificate((tmp_path / "s.crt").read_bytes()))
    listed = json.loads(cli("ca", "certificates", "--profile", "manifest-signer", "--json")[1])
    assert [c["serial_number"] for c in listed] == [number]
    code, out, _ = cli("ca", "revoke", number, "--reason", "keyCompromise")
    assert (code, f"revoked certificate {number}" in out) == (0, True)
    assert cli("ca", "crl", "--out", str(tmp_path / "crl.pem"))[0] == 0
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(number, 16)) is not None


def _est_enrol(home: Path) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject("EST-1"))
        .sign(key, hashes.SHA256())
    )
    with Authority.open(Workspace(home)) as authority:
        return enrolment.enrol(authority, Principal("admin", Role.ADMIN), csr, None)


def test_every_certificate_from_all_five_issuers_is_in_the_registry(
    home: Path, cli: Keyfab, tmp_path: Path
) -> None:
    """Batches, EST, stations, the server's TLS and manifest signers: one query finds all."""
    issued = {serial_hex(_est_enrol(home))}
    assert cli("stations", "issue", "line-1", "--out", str(tmp_path))[0] == 0
    issued.add(serial_hex(x509.load_pem_x509_certificate((tmp_path / "line-1.pem").read_bytes())))
    files = server_files(Workspace(home), ("127.0.0.1",))
    issued.add(serial_hex(x509.load_pem_x509_certificates(files.certificate.read_bytes())[0]))
    key = tmp_path / "signer2.pem"
    assert (
        cli("manifest", "signer", "--key", f"soft:{key}", "--new", "--out", str(tmp_path / "m"))[0]
        == 0
    )
    issued.add(serial_hex(x509.load_pem_x509_certificate((tmp_path / "m").read_bytes())))
    registry = Workspace(home).registry()
    try:
        recorded = {c.serial_number: c for c in queries.issued_certificates(registry)}
        with registry.reading() as session:
            events = [
                json.loads(e.data)["serial_number"]
                for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
                if e.kind == "certificate.issued"
            ]
    finally:
        registry.dispose()
    assert issued <= recorded.keys()
    assert set(events) == set(recorded)  # every row has its event and every event its row
    profiles = {c.profile for c in recorded.values()}
    assert profiles >= {
        Profile.IDEVID,
        Profile.LDEVID,
        Profile.STATION,
        Profile.TLS_SERVER,
        Profile.MANIFEST_SIGNER,
    }
    listed = json.loads(cli("ca", "certificates", "--json")[1])
    assert {c["serial_number"] for c in listed} == set(recorded)


@pytest.fixture
def write_locks() -> Iterator[list[str]]:
    """Every BEGIN IMMEDIATE (SQLite's write lock) any engine issues while the test runs."""
    taken: list[str] = []

    def spy(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.strip().upper().startswith("BEGIN IMMEDIATE"):
            taken.append(statement)

    event.listen(Engine, "before_cursor_execute", spy)
    yield taken
    event.remove(Engine, "before_cursor_execute", spy)


def test_read_only_paths_take_no_write_lock(
    home: Path, cli: Keyfab, api: TestClient, write_locks: list[str], tmp_path: Path
) -> None:
    serial = _serials(home)[3]
    number = json.loads(cli("devices", "show", serial, "--json")[1])["certificates"][0][
        "serial_number"
    ]
    api.get("/api/v1/ca/crl")  # make the newest CRL current first: fetching it then only reads
    write_locks.clear()
    for args in (
        ("devices", "list"),
        ("devices", "list", "--json", "--batch", BATCH),
        ("devices", "show", serial),
        ("devices", "show", serial, "--pem"),
        ("devices", "export", "--batch", BATCH),
        ("ca", "show"),
        ("ca", "show", "--pem"),
        ("ca", "certificates", "--json"),
        ("audit", "verify"),
        ("tokens", "list"),
        ("export", "aws-iot", "--out", str(tmp_path / "aws")),
    ):
        code, _, err = cli(*args)
        assert code == 0, (args, err)
        assert write_locks == [], args
    for path in (
        "/api/v1/devices",
        f"/api/v1/devices?batch={BATCH}&state=provisioned",
        f"/api/v1/devices/{serial}",
        f"/api/v1/certificates/{number}",
        f"/api/v1/certificates/{number}/pem",
        f"/api/v1/batches/{BATCH}",
        "/api/v1/health",
        "/api/v1/ca/chain",
        "/api/v1/ca/crl",
        "/api/v1/audit",
        "/.well-known/est/cacerts",
    ):
        assert api.get(path).status_code == 200, path
        assert write_locks == [], path
