"""An agent over a soft device, in this process, on a socket in a world-traversable directory
(so a test may connect as another user: SO_PEERCRED needs a real second uid)."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.agent.client import AgentClient
from keyfab.agent.daemon import Agent
from keyfab.agent.policy import load_settings
from keyfab.agent.tamper import Sensor
from keyfab.device import DeviceApi

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")

CONFIG = """\
rot = "soft:rot"
state_dir = "state"
socket = "{socket}"
{extra}
"""


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="keyfab-agent-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def make_device(root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with DeviceApi.open(f"soft:{root / 'rot'}", state_dir=root / "state") as device:
            device.create_key("idevid")
            device.create_key("kex", agreement=True)


def write_config(root: Path, socket: Path, extra: str = "") -> Path:
    path = root / "device.toml"
    path.write_text(CONFIG.format(socket=socket, extra=extra))
    return path


StartAgent = Callable[..., Agent]


@pytest.fixture
def start_agent(tmp_path: Path, socket_dir: Path) -> Iterator[StartAgent]:
    """start_agent(extra_toml="", sensors=None): a started agent; stopped after the test."""
    running: list[Agent] = []
    make_device(tmp_path)

    def start(extra: str = "", sensors: list[Sensor] | None = None) -> Agent:
        config = write_config(tmp_path, socket_dir / "agent.sock", extra)
        agent = Agent(load_settings(config), sensors=sensors)
        agent.start()
        running.append(agent)
        return agent

    yield start
    for agent in running:
        agent.stop()


@pytest.fixture
def client(start_agent: StartAgent) -> Iterator[AgentClient]:
    agent = start_agent()
    with AgentClient(agent.settings.device.socket) as connected:
        yield connected


def peer_key() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, der


def root_only() -> bool:
    return os.getuid() == 0
