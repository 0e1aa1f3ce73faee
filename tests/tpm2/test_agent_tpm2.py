"""End to end on a real TPM: the factory provisions a swtpm device, ``keyfab serve`` runs on
loopback, ``keyfab agent run`` serves the device and lives its life.

The agent enrols an operational certificate over EST (device token), answers
attestation challenges (trusted), locks a secret under the maker's PCR
policy. Then the TPM restarts under the running agent: its PCRs are reset, a
change no release approved. The next call still works (the agent re-opens
the TPM), but unlock is refused and the next attestation fails at the server.
The maker signs a policy for the new state: unlock works again. Finally the
case sensor fires: the server records the tamper event, the device's keys
are erased and the agent refuses service.

swtpm serves one connection at a time, so while the agent runs this test
talks to the TPM only through the agent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.agent.client import AgentClient, AgentError
from keyfab.attest.eventlog import parse_eventlog, replay
from keyfab.authority import Authority, Role
from keyfab.authority import tokens as store
from keyfab.device import DeviceApi
from keyfab.device.policy import sign_policy
from keyfab.errors import KeyNotFoundError, VerificationError
from keyfab.registry import queries
from keyfab.rot.soft import _wrap
from keyfab.workspace import Workspace
from tests.server.conftest import KEYFAB, Server, free_port

from .conftest import LocalCa, Swtpm, SwtpmFactory, start_swtpm
from .fleet import Device, provision

PCRS = (0, 7)
pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")


def _until(condition: Callable[[], bool], what: str, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.05)


class RunningAgent:
    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(KEYFAB), "agent", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def factory(
    tmp_path_factory: pytest.TempPathFactory, swtpm_factory: SwtpmFactory, local_ca: LocalCa
) -> tuple[Path, Device]:
    home = tmp_path_factory.mktemp("agent-e2e") / "home"
    (device,) = provision(home, [swtpm_factory(local_ca)], local_ca)
    return home, device


@pytest.fixture(scope="module")
def served(factory: tuple[Path, Device]) -> Iterator[Server]:
    running = Server(factory[0], free_port(), env={"KEYFAB_DATABASE_URL": ""}).start()
    yield running
    running.stop()


def _status(socket: Path) -> dict[str, Any]:
    try:
        with AgentClient(socket, timeout=30) as client:
            return client.status()
    except AgentError:
        return {}


def _verdict(socket: Path) -> str | None:
    return (_status(socket).get("attestation") or {}).get("verdict")


def test_the_agent_on_a_tpm_end_to_end(
    factory: tuple[Path, Device], served: Server, tmp_path: Path
) -> None:
    home, device = factory
    maker = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "maker.pem").write_bytes(
        maker.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "eventlog.bin").write_bytes(device.log)
    with Authority.open(Workspace(home)) as authority:
        token = store.create(authority, "agent-e2e", Role.DEVICE, device_serial=device.serial)
    (tmp_path / "token").write_text(token.secret)
    socket = tmp_path / "agent.sock"
    config = tmp_path / "device.toml"
    config.write_text(
        f'rot = "{device.tpm.uri}"\nstate_dir = "state"\nsocket = "{socket}"\n'
        f'pcrs = [0, 7]\npolicy_key = "maker.pem"\nserver = "{served.url}"\n'
        f'[agent]\nest_token = "token"\ntrust = "{served.trust}"\n'
        'eventlog = "eventlog.bin"\nattest_every = "1s"\n'
        '[[tamper.sensors]]\nname = "case"\nkind = "file"\npath = "case"\npoll_ms = 20\n'
        'actions = ["log", "notify", "erase", "refuse"]\n'
    )
    agent = RunningAgent(config, tmp_path / "agent.log")
    restarted: Swtpm | None = None
    try:
        _until(lambda: _verdict(socket) == "trusted", "a trusted attestation after enrolment")
        booted = replay(parse_eventlog(device.log))["sha256"]
        release_1 = sign_policy(_wrap("maker", maker), "sha256", {p: booted[p] for p in PCRS})
        with AgentClient(socket) as client:
            assert client.status()["certificate"]["operational"] is True
            client.apply_policy(release_1)
            blob = client.lock(b"database key")
            assert client.unlock(blob) == b"database key"

            device.tpm.stop()  # the TPM restarts under the running agent: PCRs reset
            restarted = start_swtpm(device.tpm.state, device.tpm.ca, port=device.tpm.port)
            assert len(client.random(16)) == 16  # the agent re-opened the TPM
            with pytest.raises(VerificationError, match="match no policy"):
                client.unlock(blob)
        _until(lambda: _verdict(socket) == "failed", "the failed attestation")
        with Authority.open(Workspace(home)) as authority:
            history = queries.attestation_history(authority.registry, device.serial, 1)
            assert history.device.attestation == "failed"

        zeros = {p: bytes(32) for p in PCRS}  # the maker approves the new state
        with AgentClient(socket) as client:
            client.apply_policy(sign_policy(_wrap("maker", maker), "sha256", zeros))
            assert client.unlock(blob) == b"database key"

        (tmp_path / "case").write_text("1\n")  # the case is opened
        _until(lambda: bool(_status(socket).get("refused")), "the tamper response")
        with AgentClient(socket) as client, pytest.raises(AgentError, match="refuses service"):
            client.sign("idevid", message=b"x")
        with Authority.open(Workspace(home)) as authority:

            def reported() -> list[dict[str, Any]]:
                page = queries.audit_events(
                    authority.registry, kind="device.tamper", subjects=[device.serial]
                )
                return [json.loads(event.data)["reported"] for event in page.items]

            _until(lambda: bool(reported()), "the server to record the tamper event")
            assert reported()[0]["sensor"] == "case"
        agent.stop()
        with (
            DeviceApi.open((restarted or device.tpm).uri, state_dir=tmp_path / "state") as after,
            pytest.raises(KeyNotFoundError),
        ):
            after.public_key("idevid")  # erased
    finally:
        agent.stop()
        print(agent.log.read_text(errors="replace")[-4000:])
        if restarted is not None:
            restarted.stop()
