"""``keyfab device`` as a real process on the soft driver, from a device config file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")


def _keyfab(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    code = "from keyfab.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    from keyfab.device import DeviceApi

    with DeviceApi.open(f"soft:{tmp_path / 'rot'}", state_dir=tmp_path / "state") as device:
        device.create_key("idevid")
    path = tmp_path / "device.toml"
    path.write_text('rot = "soft:rot"\nstate_dir = "state"\n[agent]\nanything = 1\n')
    return path


def test_sign_then_openssl_verifies(config: Path, tmp_path: Path) -> None:
    (tmp_path / "msg").write_bytes(b"hello")
    signed = _keyfab(
        "device",
        "sign",
        "--config",
        str(config),
        "--label",
        "idevid",
        "-i",
        str(tmp_path / "msg"),
        "-o",
        str(tmp_path / "sig"),
    )
    assert signed.returncode == 0, signed.stderr
    pub = _keyfab(
        "device",
        "public-key",
        "--config",
        str(config),
        "--label",
        "idevid",
        "-o",
        str(tmp_path / "pub.pem"),
    )
    assert pub.returncode == 0, pub.stderr
    openssl = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(tmp_path / "pub.pem"),
            "-signature",
            str(tmp_path / "sig"),
            str(tmp_path / "msg"),
        ],
        capture_output=True,
        check=False,
    )
    assert openssl.returncode == 0, openssl.stderr
    ours = _keyfab(
        "device",
        "verify",
        "--config",
        str(config),
        "--label",
        "idevid",
        "--signature",
        str(tmp_path / "sig"),
        "-i",
        str(tmp_path / "msg"),
    )
    assert ours.returncode == 0
    assert b"Verified OK" in ours.stdout
    bad = _keyfab(
        "device",
        "verify",
        "--config",
        str(config),
        "--label",
        "idevid",
        "--signature",
        str(tmp_path / "sig"),
        stdin=b"other",
    )
    assert bad.returncode == 1


def test_lock_unlock_through_pipes(config: Path) -> None:
    locked = _keyfab("device", "lock", "--config", str(config), stdin=b"secret")
    assert locked.returncode == 0, locked.stderr
    unlocked = _keyfab("device", "unlock", "--config", str(config), stdin=locked.stdout)
    assert unlocked.stdout == b"secret"
    broken = _keyfab("device", "unlock", "--config", str(config), stdin=locked.stdout[:-1] + b"?")
    assert broken.returncode == 1
    lines = broken.stderr.decode().strip().splitlines()
    assert lines[0].startswith("warning: soft root of trust")  # the development-only warning
    assert lines[1:] == [
        "error: soft: locked data: not locked by this device, or changed since it was locked"
    ]


def test_counter_and_random(config: Path) -> None:
    up = _keyfab("device", "counter", "--config", str(config), "fw", "--increment", "--json")
    assert up.returncode == 0
    assert b'"value": 1' in up.stdout
    rand = _keyfab("device", "random", "--config", str(config), "16", "--hex")
    assert len(rand.stdout.strip()) == 32


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text('rot = "soft:x"\nstate_dir = "s"\nsokcet = "/tmp/x"\n')
    result = _keyfab("device", "random", "--config", str(path), "4")
    assert result.returncode == 1
    assert "sokcet" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()
