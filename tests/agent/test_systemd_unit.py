"""packaging/keyfab-agent.service: hardened, and valid to systemd when it is here to ask."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "keyfab-agent.service"


def _options(text: str) -> dict[str, list[str]]:
    """Key -> every value it takes (systemd units repeat keys such as DeviceAllow)."""
    options: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, equals, value = line.partition("=")
        assert equals, f"not KEY=VALUE: {line!r}"
        options.setdefault(key, []).append(value)
    return options


def test_hardening_options() -> None:
    options = _options(UNIT.read_text())
    assert options["ExecStart"][0].split()[1:3] == ["agent", "run"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "DevicePolicy": "closed",
        "CapabilityBoundingSet": "",
        "UMask": "0117",
        "RuntimeDirectory": "keyfab",
        "StateDirectory": "keyfab",
    }.items():
        assert options[key] == [value], key
    assert "/dev/tpmrm0 rw" in options["DeviceAllow"]
    assert set(options["ReadWritePaths"][0].split()) == {"/var/lib/keyfab", "/run/keyfab"}


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    keyfab = Path(sys.executable).parent / "keyfab"
    if not keyfab.exists():
        pytest.skip("no keyfab entry point beside this Python")
    unit = tmp_path / "keyfab-agent.service"  # ExecStart must exist where verify looks
    unit.write_text(UNIT.read_text().replace("/usr/bin/keyfab", str(keyfab)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "keyfab-agent.service" not in done.stderr, done.stderr
