"""The agent's small rules: strict sections, re-opening a failed root of trust (and which
calls are retried), backoff with jitter, when renewal is due."""

from __future__ import annotations

import datetime
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyfab.agent.calls import Service
from keyfab.agent.policy import load_settings
from keyfab.agent.renewal import Backoff, due
from keyfab.agent.state import AgentState
from keyfab.device import DeviceApi
from keyfab.errors import ConfigError, RotError

from .conftest import make_device, write_config

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[agent]\nfoo = 1", r"\[agent\] foo: Extra inputs are not permitted"),
        ('[agent]\nallow = { erase = ["*"] }', r"unknown call 'erase'"),
        ('[agent]\nadmins = ["root"]', r"use uid:, gid:, user:, group: or \*"),
        ('[agent]\nadmins = ["user:no-such-user-here"]', "no such user or group"),
        ('[[tamper.sensors]]\nname = "x"\nkind = "laser"', r"\[tamper\] sensors.0.kind"),
        ('[boot]\non_mismatch = ["reboot"]', r"\[boot\] on_mismatch.0"),
    ],
)
def test_sections_are_strict(tmp_path: Path, extra: str, message: str) -> None:
    from keyfab.agent.policy import CallPolicy

    config = write_config(tmp_path, tmp_path / "a.sock", extra)
    with pytest.raises(ConfigError, match=message):
        CallPolicy(load_settings(config).agent)


class _Flaky:
    """Opens real soft devices; the first one's transport fails."""

    def __init__(self, root: Path):
        self.root = root
        self.opened: list[DeviceApi] = []

    def __call__(self) -> DeviceApi:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            device = DeviceApi.open(f"soft:{self.root / 'rot'}", state_dir=self.root / "state")
        if not self.opened:  # the first device's transport breaks
            device.random = _broken  # type: ignore[method-assign]
            device.increment = _broken  # type: ignore[method-assign]
        self.opened.append(device)
        return device


def _broken(*args: object) -> Any:
    raise RotError("tpm2: cannot talk to the TPM on swtpm: connection reset")


def _status() -> dict[str, Any]:
    return {}


def test_a_transport_error_reopens_and_retries_idempotent_calls(tmp_path: Path) -> None:
    make_device(tmp_path)
    opener = _Flaky(tmp_path)
    service = Service(opener, AgentState(tmp_path / "state"), _status)
    assert len(service.call("random", {"n": 8})) == 8  # failed once, re-opened, retried
    assert len(opener.opened) == 2
    service.close()

    opener = _Flaky(tmp_path)
    service = Service(opener, AgentState(tmp_path / "state"), _status)
    with pytest.raises(RotError, match="cannot talk"):
        service.call("increment", {"name": "fw"})  # might have happened: not retried
    assert len(opener.opened) == 2  # but the next call gets a fresh device
    assert service.call("increment", {"name": "fw"}) >= 1
    service.close()


def test_backoff_doubles_caps_and_jitters() -> None:
    backoff = Backoff(base=10.0, cap=100.0, rng=random.Random(7))
    delays = [backoff.failed() for _ in range(8)]
    for n, delay in enumerate(delays):
        nominal = min(10.0 * 2**n, 100.0)
        assert 0.5 * nominal <= delay < 1.5 * nominal
    assert len(set(delays)) == len(delays)  # jittered: a fleet does not retry in step
    backoff.succeeded()
    assert 5.0 <= backoff.failed() < 15.0


def _certificate(days: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, "AGW-1")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )


def test_renewal_is_due_in_the_last_third_or_as_configured() -> None:
    certificate = _certificate(90)
    assert due(certificate, None) == datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC)
    assert due(certificate, datetime.timedelta(days=10)) == datetime.datetime(
        2026, 3, 22, tzinfo=datetime.UTC
    )


def test_state_writes_keep_what_another_process_wrote(tmp_path: Path) -> None:
    running, operator = AgentState(tmp_path), AgentState(tmp_path)
    running.refuse("tamper at then")
    operator.rearm()  # keyfab agent rearm while the agent still runs
    running.note("attestation", {"verdict": "trusted"})
    on_disk = AgentState(tmp_path).snapshot()
    assert on_disk["refused"] is None
    assert on_disk["attestation"]["verdict"] == "trusted"
    assert (tmp_path / "agent-state.json").stat().st_mode & 0o777 == 0o600
