"""Roles: every endpoint called as every kind of caller; tokens' life cycle."""

from __future__ import annotations

import base64
import datetime
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select, update

from keyfab.authority import Authority, Role
from keyfab.authority import tokens as store
from keyfab.provision import create_batch
from keyfab.registry import ApiToken, Registry
from keyfab.workspace import Workspace
from tests.conftest import Keyfab
from tests.server.conftest import RECIPE, Server, batch_device, make_workspace, wait_for_batch
from tests.server.est_client import new_csr, subject, unwrap, write_identity

PKCS10 = {"Content-Type": "application/pkcs10"}
CALLERS = ("anonymous", "admin", "operator", "auditor", "device", "device-cert", "station")
READ = {"admin", "operator", "auditor", "station"}
WRITE = {"admin", "operator", "station"}
PUBLIC = {*CALLERS}

Call = Callable[[httpx.Client, str], httpx.Response]


def _enrol(client: httpx.Client, caller: str) -> httpx.Response:
    _, csr = new_csr(f"matrix-{caller}")
    return client.post("/.well-known/est/simpleenroll", content=csr, headers=PKCS10)


def _reenrol(client: httpx.Client, caller: str) -> httpx.Response:
    _, csr = new_csr(SETUP["renewable"][0])
    return client.post("/.well-known/est/simplereenroll", content=csr, headers=PKCS10)


# (name, call, callers allowed). Refused callers must get 401 (anonymous) or 403.
MATRIX: list[tuple[str, Call, set[str]]] = [
    ("health", lambda c, _: c.get("/api/v1/health"), PUBLIC),
    ("openapi", lambda c, _: c.get("/openapi.json"), PUBLIC),
    ("ca chain", lambda c, _: c.get("/api/v1/ca/chain"), PUBLIC),
    ("ca crl", lambda c, _: c.get("/api/v1/ca/crl?encoding=pem"), PUBLIC),
    ("est cacerts", lambda c, _: c.get("/.well-known/est/cacerts"), PUBLIC),
    ("est csrattrs", lambda c, _: c.get("/.well-known/est/csrattrs"), PUBLIC),
    ("devices list", lambda c, _: c.get("/api/v1/devices"), READ),
    ("device show", lambda c, _: c.get(f"/api/v1/devices/{SETUP['devices'][0]}"), READ),
    (
        "device revoke",
        lambda c, who: c.post(f"/api/v1/devices/{SETUP['devices'][CALLERS.index(who)]}/revoke"),
        WRITE,
    ),
    ("certificate show", lambda c, _: c.get(f"/api/v1/certificates/{SETUP['cert'][0]}"), READ),
    ("certificate pem", lambda c, _: c.get(f"/api/v1/certificates/{SETUP['cert'][0]}/pem"), READ),
    ("certificate der", lambda c, _: c.get(f"/api/v1/certificates/{SETUP['cert'][0]}/der"), READ),
    (
        "batch create",
        lambda c, who: c.post(
            "/api/v1/batches", json={"name": f"new-{who}", "recipe": "gateway", "count": 1}
        ),
        WRITE,
    ),
    ("batch progress", lambda c, _: c.get("/api/v1/batches/mx"), READ),
    ("batch resume", lambda c, who: c.post(f"/api/v1/batches/rs-{who}/resume"), WRITE),
    ("audit status", lambda c, _: c.get("/api/v1/audit"), {"admin", "auditor"}),
    ("est simpleenroll", _enrol, {"admin", "operator", "device", "station"}),
    ("est simplereenroll", _reenrol, {"device-cert"}),
]

SETUP: dict[str, list[str]] = {}


@pytest.fixture(scope="module")
def matrix_setup(server: Server, admin: httpx.Client, tokens: dict[Role, str]) -> None:
    """Devices to revoke, pending batches to resume, one certificate to read."""
    answer = admin.post(
        "/api/v1/batches", json={"name": "mx", "recipe": "gateway", "count": len(CALLERS)}
    )
    assert answer.status_code == 201
    for who in CALLERS:
        create_batch(Workspace(server.home), RECIPE, server.home, f"rs-{who}", 1)
    wait_for_batch(admin, "mx")
    page = admin.get("/api/v1/devices", params={"batch": "mx"}).json()
    SETUP["devices"] = [d["serial"] for d in page["items"]]
    first = admin.get(f"/api/v1/devices/{SETUP['devices'][0]}").json()
    SETUP["cert"] = [first["certificates"][0]["serial_number"]]


@pytest.fixture(scope="module")
def device_identity(
    server: Server, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """An operational certificate obtained by EST for a device the matrix re-enrols."""
    SETUP["renewable"] = [batch_device(server, admin, "mx-renewable")]
    key, csr = new_csr(SETUP["renewable"][0])
    answer = admin.post("/.well-known/est/simpleenroll", content=csr, headers=PKCS10)
    assert answer.status_code == 200, answer.text
    (certificate,) = unwrap(answer.content)
    return write_identity(tmp_path_factory.mktemp("identity"), "device", key, certificate)


def _tls_client(server: Server, identity: tuple[Path, Path]) -> httpx.Client:
    context = server.context()
    context.load_cert_chain(*identity)
    return httpx.Client(base_url=server.url, verify=context, timeout=30.0)


@pytest.fixture(scope="module")
def station_identity(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A station certificate and key made by 'keyfab stations issue'."""
    folder = tmp_path_factory.mktemp("station")
    code, _out, err = Keyfab(server.home)("stations", "issue", "line-1", "--out", str(folder))
    assert code == 0, err
    assert oct((folder / "line-1.key").stat().st_mode & 0o777) == "0o600"
    return folder / "line-1.pem", folder / "line-1.key"


def _client(
    server: Server,
    caller: str,
    tokens: dict[Role, str],
    identities: dict[str, tuple[Path, Path]],
) -> httpx.Client:
    if caller == "anonymous":
        return server.client()
    if caller in identities:
        return _tls_client(server, identities[caller])
    return server.client(tokens[Role(caller)])


@pytest.fixture(scope="module")
def clients(
    server: Server,
    tokens: dict[Role, str],
    device_identity: tuple[Path, Path],
    station_identity: tuple[Path, Path],
) -> Iterator[dict[str, httpx.Client]]:
    identities = {"device-cert": device_identity, "station": station_identity}
    opened = {who: _client(server, who, tokens, identities) for who in CALLERS}
    yield opened
    for client in opened.values():
        client.close()


@pytest.mark.parametrize(("name", "call", "allowed"), MATRIX, ids=[m[0] for m in MATRIX])
@pytest.mark.parametrize("caller", CALLERS)
def test_role_endpoint_matrix(
    matrix_setup: None,
    clients: dict[str, httpx.Client],
    caller: str,
    name: str,
    call: Call,
    allowed: set[str],
) -> None:
    answer = call(clients[caller], caller)
    if caller in allowed:
        assert answer.status_code < 300, f"{caller} {name}: {answer.status_code} {answer.text}"
    else:
        expected = {401} if caller == "anonymous" or name == "est simplereenroll" else {403}
        assert answer.status_code in expected, f"{caller} {name}: {answer.status_code}"
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == answer.status_code


def test_tokens_are_stored_as_digests(registry: Registry, tokens: dict[Role, str]) -> None:
    with registry.transaction() as session:
        rows = session.scalars(select(ApiToken)).all()
    stored = " ".join(f"{r.id} {r.digest} {r.name}" for r in rows)
    for token in tokens.values():
        secret = token[len("kf_") + 16 + 1 :]  # kf_<id>_<secret>: "_" can be in the secret
        assert len(secret) == 43
        assert secret not in stored


def test_expired_revoked_and_malformed_tokens(server: Server, authority: Authority) -> None:
    expired = store.create(authority, "short", Role.ADMIN, expires_in=datetime.timedelta(minutes=1))
    with authority.transaction() as session:
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        session.execute(update(ApiToken).where(ApiToken.id == expired.id).values(expires_at=past))
    revoked = store.create(authority, "gone", Role.ADMIN)
    store.revoke(authority, "gone")
    forged = revoked.secret[:-4] + "AAAA"
    for token, reason in (
        (expired.secret, "token expired"),
        (revoked.secret, "token revoked"),
        (forged, "unknown token"),
        ("kf_nothex_x", "malformed token"),
        ("x" * 5000, "malformed token"),
    ):
        with server.client(token) as client:
            answer = client.get("/api/v1/devices")
        assert answer.status_code == 401
        assert answer.json()["detail"] == reason
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_basic_auth_needs_the_tokens_name(server: Server, tokens: dict[Role, str]) -> None:
    token = tokens[Role.ADMIN]
    for user, status in (("t-admin", 200), ("someone", 401)):
        basic = base64.b64encode(f"{user}:{token}".encode()).decode()
        with server.client() as client:
            answer = client.get("/api/v1/devices", headers={"Authorization": f"Basic {basic}"})
        assert answer.status_code == status
    with server.client() as client:
        for header in ("Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Digest x"):
            assert (
                client.get("/api/v1/devices", headers={"Authorization": header}).status_code == 401
            )


def test_client_certificate_from_another_ca_is_refused(server: Server, tmp_path: Path) -> None:
    """The TLS layer refuses a client certificate that does not lead to keyfab's root."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(subject("matrix-device-cert"))
        .issuer_name(subject("matrix-device-cert"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    context = server.context()
    context.load_cert_chain(*write_identity(tmp_path, "forged", key, forged))
    _, csr = new_csr("matrix-device-cert")
    with (
        pytest.raises((httpx.TransportError, ssl.SSLError)),
        httpx.Client(base_url=server.url, verify=context) as client,
    ):
        client.post("/.well-known/est/simplereenroll", content=csr, headers=PKCS10)


def test_tokens_cli_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_workspace(home)
    keyfab = Keyfab(home)
    code, out, _ = keyfab("tokens", "create", "line-3", "--role", "operator", "--expires-in", "8h")
    assert code == 0
    assert out.strip().startswith("kf_")
    code, out, _ = keyfab("tokens", "list", "--json")
    assert code == 0
    assert '"line-3"' in out
    assert out.count("kf_") == 0
    assert keyfab("tokens", "revoke", "line-3")[0] == 0
    code, out, _ = keyfab("tokens", "revoke", "line-3")
    assert code == 0
    assert "already revoked: nothing changed" in out
    code, _, err = keyfab("tokens", "create", "x", "--role", "admin", "--expires-in", "soon")
    assert code == 1
    assert "--expires-in" in err
    code, _, err = keyfab("tokens", "create", "d", "--role", "admin", "--device", "SN1")
    assert code == 1
    assert "only device tokens" in err


def test_revoked_station_is_locked_out(
    server: Server, station_identity: tuple[Path, Path], matrix_setup: None
) -> None:
    code, _, err = Keyfab(server.home)(
        "stations", "issue", "line-9", "--out", str(station_identity[0].parent)
    )
    assert code == 0, err
    identity = (
        station_identity[0].parent / "line-9.pem",
        station_identity[0].parent / "line-9.key",
    )
    with _tls_client(server, identity) as client:
        assert client.get("/api/v1/devices").status_code == 200
        assert Keyfab(server.home)("stations", "revoke", "line-9")[0] == 0
        refused = client.get("/api/v1/devices")
    assert refused.status_code == 403
    assert refused.json()["type"] == "urn:keyfab:problem:station-revoked"
