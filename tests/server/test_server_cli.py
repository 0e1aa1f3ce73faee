"""``keyfab serve``: plain HTTP only on loopback; its TLS certificate from keyfab's PKI."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from sqlalchemy import select

from keyfab.registry import Certificate
from keyfab.server import server_files
from keyfab.workspace import Workspace
from tests.conftest import Keyfab
from tests.server.conftest import Server, free_port, make_workspace


def test_insecure_http_refused_off_loopback(tmp_path: Path) -> None:
    make_workspace(tmp_path / "home")
    code, _, err = Keyfab(tmp_path / "home")("serve", "--host", "0.0.0.0", "--insecure-http")
    assert code == 1
    assert "loopback" in err


def test_serve_without_workspace_is_one_clear_error(tmp_path: Path) -> None:
    code, _, err = Keyfab(tmp_path / "nothing")("serve")
    assert code == 1
    assert "keyfab init" in err


def test_insecure_http_on_loopback_serves(tmp_path: Path) -> None:
    make_workspace(tmp_path / "home")
    server = Server(tmp_path / "home", free_port(), tls=False).start()
    try:
        with server.client() as client:
            assert client.get("/api/v1/health").status_code == 200
    finally:
        server.stop()
    assert not (tmp_path / "home" / "server").exists()  # no TLS files were made


def test_server_certificate_reissued_only_when_needed(tmp_path: Path) -> None:
    space = make_workspace(tmp_path / "home")
    first = server_files(space, ("127.0.0.1", "localhost"))
    assert oct(first.key.stat().st_mode & 0o777) == "0o600"
    pem = first.certificate.read_bytes()
    assert server_files(space, ("127.0.0.1", "localhost")).certificate.read_bytes() == pem
    server_files(space, ("gateway.example",))  # other names: a new certificate
    leaf = x509.load_pem_x509_certificates(first.certificate.read_bytes())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gateway.example"]
    registry = Workspace(space.home).registry()
    try:
        with registry.transaction() as session:
            profiles = session.scalars(select(Certificate.profile)).all()
    finally:
        registry.dispose()
    assert profiles == ["tls-server", "tls-server"]  # both recorded, with audit events
