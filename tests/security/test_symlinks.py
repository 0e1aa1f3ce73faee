"""Issue 12: no secret is written through a symlink or into a directory someone else controls.

``keyfab serve`` wrote its TLS private key through a symlink planted at
``server/tls-key.tmp``. Secrets now go only into a real directory owned by the
user and writable by no one else, and never through a link at either name.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from keyfab.errors import ConfigError
from keyfab.securefile import UnsafeDirectoryError, write_secret
from keyfab.server import server_files
from keyfab.workspace import Workspace
from tests.conftest import Keyfab

HOSTS = ("localhost",)


@pytest.fixture
def bait(tmp_path: Path) -> Path:
    """A world-readable file elsewhere that an attacker would like the key in."""
    path = tmp_path / "bait.pem"
    path.write_text("bait\n")
    path.chmod(0o644)
    return path


def _key_is_private(key: Path) -> None:
    info = key.lstat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()


@pytest.mark.parametrize("name", ["tls-key.tmp", "tls-key.pem"])
def test_symlink_at_the_tls_key_names(workspace: Workspace, bait: Path, name: str) -> None:
    server = workspace.home / "server"
    server.mkdir(mode=0o700)
    (server / name).symlink_to(bait)
    files = server_files(workspace, HOSTS)
    assert bait.read_text() == "bait\n"
    _key_is_private(files.key)


def test_symlink_replacing_a_current_tls_key(workspace: Workspace, bait: Path) -> None:
    files = server_files(workspace, HOSTS)
    files.key.unlink()
    files.key.symlink_to(bait)  # the certificate is still current
    server_files(workspace, HOSTS)
    assert bait.read_text() == "bait\n"
    _key_is_private(files.key)


def test_symlinked_server_directory(workspace: Workspace, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (workspace.home / "server").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a directory"):
        server_files(workspace, HOSTS)
    assert not any(p.name.startswith("tls-key") for p in elsewhere.iterdir())


def test_symlinked_certificate_files_are_replaced_not_followed(
    workspace: Workspace, bait: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    other.write_text("other\n")
    server = workspace.home / "server"
    server.mkdir(mode=0o700)
    (server / "trust.pem").symlink_to(bait)
    (server / "tls-cert.pem").symlink_to(other)
    server_files(workspace, HOSTS)
    assert (bait.read_text(), other.read_text()) == ("bait\n", "other\n")


def test_world_writable_directory_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafeDirectoryError, match="writable by group or others"):
        write_secret(shared / "key.pem", b"secret")
    assert list(shared.iterdir()) == []


def test_station_key_into_a_group_writable_directory(keyfab: Keyfab, tmp_path: Path) -> None:
    assert keyfab("init")[0] == 0
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o775)
    code, _, err = keyfab("stations", "issue", "line-1", "--out", str(out))
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: refusing to write a secret into {out}: writable by group or others"
    ]
    assert list(out.iterdir()) == []
