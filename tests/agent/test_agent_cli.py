"""``keyfab agent`` and ``keyfab device --socket`` as real processes on the soft driver."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import make_device, write_config

CODE = "from keyfab.cli import main; main()"


def _keyfab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CODE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def running(tmp_path: Path, socket_dir: Path) -> Iterator[tuple[Path, Path]]:
    """(config, socket) of a `keyfab agent run` process."""
    make_device(tmp_path)
    socket = socket_dir / "agent.sock"
    config = write_config(tmp_path, socket)
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", CODE, "agent", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not socket.exists():
        assert agent.poll() is None, (tmp_path / "agent.log").read_text()
        assert time.monotonic() < deadline, "the agent did not bind its socket"
        threading.Event().wait(0.05)
    yield config, socket
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    log.close()
    assert not socket.exists()  # removed on the way out
    assert "serving soft on" in (tmp_path / "agent.log").read_text()


def test_device_commands_through_the_agent(running: tuple[Path, Path], tmp_path: Path) -> None:
    config, socket = running
    drawn = _keyfab("device", "random", "16", "--hex", "--socket", str(socket))
    assert drawn.returncode == 0, drawn.stderr
    assert len(bytes.fromhex(drawn.stdout.strip())) == 16
    (tmp_path / "msg").write_bytes(b"hello")
    signed = _keyfab(
        "device", "sign", "--label", "idevid", "-i", str(tmp_path / "msg"),
        "-o", str(tmp_path / "sig"), "--socket", str(socket),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    checked = _keyfab(
        "device", "verify", "--label", "idevid", "--signature", str(tmp_path / "sig"),
        "-i", str(tmp_path / "msg"), "--socket", str(socket),
    )  # fmt: skip
    assert checked.stdout.strip() == "Verified OK"
    status = _keyfab("agent", "status", "--config", str(config), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["agent"] == "running"
    assert report["rot"] == "soft"
    assert report["refused"] is None
    table = _keyfab("device", "status", "--config", str(config))
    assert "in service" in table.stdout
    missing = _keyfab("device", "sign", "--label", "nope", "-i", str(tmp_path / "msg"),
                      "--socket", str(socket))  # fmt: skip
    assert missing.returncode != 0
    assert len(missing.stderr.strip().splitlines()) == 1


def test_status_without_an_agent_and_a_bad_socket(tmp_path: Path, socket_dir: Path) -> None:
    make_device(tmp_path)
    config = write_config(tmp_path, socket_dir / "agent.sock")
    offline = _keyfab("agent", "status", "--config", str(config), "--json")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["agent"] == "not running"
    refused = _keyfab("device", "random", "8", "--socket", str(tmp_path / "none.sock"))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot reach the agent at {tmp_path / 'none.sock'}: No such file or directory"
    ]


def test_manifest_sign_and_verify(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "boot.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "boot.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"kernel")
    manifest = tmp_path / "boot.manifest"
    made = _keyfab(
        "agent", "manifest", "sign", "--key", f"soft:{tmp_path / 'boot.pem'}",
        "--release", "2.1", str(kernel), "-o", str(manifest),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    good = _keyfab(
        "agent", "manifest", "verify", str(manifest), "--key", str(tmp_path / "boot.pub")
    )
    assert good.stdout.strip() == "release 2.1: every file as signed"
    kernel.write_bytes(b"kernel!")
    bad = _keyfab("agent", "manifest", "verify", str(manifest), "--key", str(tmp_path / "boot.pub"))
    assert bad.returncode != 0
    assert bad.stderr.strip() == (
        f"error: boot manifest {manifest}: {kernel}: SHA-256 differs from the manifest"
    )
