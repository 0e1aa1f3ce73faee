"""The agent over a SoftHSM2 token: the socket's calls are the token's mechanisms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.agent.client import AgentClient
from keyfab.agent.daemon import Agent
from keyfab.agent.policy import load_settings
from keyfab.device import DeviceApi
from keyfab.errors import UnsupportedError, VerificationError
from tests.pkcs11.conftest import SoftHsm


@pytest.fixture
def agent(softhsm: SoftHsm, tmp_path: Path) -> Iterator[Agent]:
    with DeviceApi.open(softhsm.uri("agent"), state_dir=tmp_path) as api:
        api.erase()
        api.create_key("idevid")
    config = tmp_path / "device.toml"
    config.write_text(
        f'rot = "{softhsm.uri("agent")}"\nstate_dir = "state"\nsocket = "agent.sock"\n'
    )
    running = Agent(load_settings(config))
    running.start()
    yield running
    running.service.device.erase()
    running.stop()


def test_token_calls_through_the_socket(agent: Agent) -> None:
    with AgentClient(agent.settings.device.socket) as client:
        signature = client.sign("idevid", message=b"hello")
        public = serialization.load_der_public_key(client.public_key("idevid"))
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
        blob = client.lock(b"token secret")
        assert client.unlock(blob) == b"token secret"
        with pytest.raises(VerificationError, match="changed"):
            client.unlock(blob[:-1] + bytes([blob[-1] ^ 1]))
        with pytest.raises(UnsupportedError, match="monotonic counter"):
            client.counter("fw")  # the token's refusal, the same class through the socket
        assert len(client.random(64)) == 64
