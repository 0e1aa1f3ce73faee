"""Real boot event logs (shared fixtures) and Debian's ``tpm2_eventlog`` as the oracle."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
EVENTLOGS = REPO_ROOT.parent / "shared" / "fixtures" / "eventlogs"
LOG_NAMES = ("event-arch-linux.bin", "event-bootorder.bin", "event-uefi-sha1-log.bin")
_DIGEST_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3_256": 32}


def real_log(name: str) -> Path:
    """A real log from the shared fixtures, or a skip saying why it is missing."""
    path = EVENTLOGS / name
    if not path.is_file():
        pytest.skip(f"event log {path} not found (shared fixtures absent)")
    return path


@pytest.fixture(params=LOG_NAMES)
def log_path(request: pytest.FixtureRequest) -> Path:
    return real_log(request.param)


def tpm2_eventlog(path: Path) -> str:
    """What ``tpm2_eventlog FILE`` prints (it must accept the file)."""
    if shutil.which("tpm2_eventlog") is None:
        pytest.skip("tpm2_eventlog not installed (tpm2-tools, scripts/system-packages.txt)")
    done = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def oracle_pcrs(output: str) -> dict[str, dict[int, str]]:
    """The ``pcrs:`` section of tpm2_eventlog's output, as bank → PCR → hex.

    Only that section is read as YAML: tpm2-tools 5.4 prints some events in a
    form YAML parsers refuse. Its values (``0x…``) load as integers.
    """
    section = yaml.safe_load(output[output.index("\npcrs:") :])["pcrs"]
    return {
        bank: {pcr: f"{value:0{2 * _DIGEST_SIZES[bank]}x}" for pcr, value in values.items()}
        for bank, values in section.items()
    }


def oracle_event_count(output: str) -> int:
    return len(re.findall(r"^\s*(?:- )?PCRIndex:", output, re.MULTILINE))
