"""Device events over a real ``keyfab serve`` and the agent's lifecycle on a soft device.

``POST /api/v1/devices/{serial}/events``: a device reports about itself only,
kinds and sizes are checked, each event becomes an audit event. Then a
``keyfab agent`` over a device provisioned by the server enrols an
operational certificate over EST with its device token, renews it over
mutual TLS, and on a tamper event notifies the server (the audit log shows
it) before it erases its keys.
"""

from __future__ import annotations

import datetime
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from keyfab.agent import tamper
from keyfab.agent.client import AgentClient, AgentError
from keyfab.agent.daemon import Agent
from keyfab.agent.policy import load_settings
from keyfab.authority import Authority, Role
from keyfab.authority import tokens as store
from keyfab.registry import Registry, queries
from tests.server.conftest import RECIPE, Server, batch_device

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")
EVENTS = "/api/v1/devices/{}/events"


def _events(registry: Registry, serial: str, kind: str) -> list[dict[str, object]]:
    page = queries.audit_events(registry, kind=kind, subjects=[serial])
    return [json.loads(event.data) for event in page.items]


@pytest.fixture(scope="module")
def device(server: Server, admin: httpx.Client) -> str:
    return batch_device(server, admin, "agent-events")


def _token(authority: Authority, name: str, serial: str) -> str:
    return store.create(authority, name, Role.DEVICE, device_serial=serial).secret


def test_a_device_reports_about_itself_only(
    server: Server, authority: Authority, registry: Registry, device: str, admin: httpx.Client
) -> None:
    with server.client(_token(authority, "events-a", device)) as client:
        answer = client.post(EVENTS.format(device), json={"kind": "tamper", "details": {"x": 1}})
        assert answer.status_code == 201, answer.text
        assert answer.json()["kind"] == "tamper"
        bad = client.post(EVENTS.format(device), json={"kind": "reboot", "details": {}})
        assert bad.status_code == 400
        assert "unknown event kind" in bad.json()["detail"]
        huge = client.post(
            EVENTS.format(device), json={"kind": "tamper", "details": {"a": "x" * 5000}}
        )
        assert huge.status_code == 400
        other = batch_device(server, admin, "agent-events-other")
        foreign = client.post(EVENTS.format(other), json={"kind": "tamper"})
        assert foreign.status_code == 403
    recorded = _events(registry, device, "device.tamper")
    assert recorded[0]["reported"] == {"x": 1}
    assert recorded[0]["by"] == "events-a"


def _until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    import threading
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        threading.Event().wait(0.02)


def test_agent_enrols_renews_and_reports_tamper(
    server: Server,
    admin: httpx.Client,
    authority: Authority,
    registry: Registry,
    tmp_path: Path,
) -> None:
    serial = batch_device(server, admin, "agent-life")
    token = tmp_path / "est-token"
    token.write_text(_token(authority, "agent-life", serial))
    rot = server.home / "devices" / "agent-life" / "000000"
    config = tmp_path / "device.toml"
    config.write_text(
        f'rot = "soft:{rot}"\nstate_dir = "state"\nsocket = "agent.sock"\n'
        f'server = "{server.url}"\n'
        f'[agent]\nest_token = "{token}"\ntrust = "{server.trust}"\n'
        '[[tamper.sensors]]\nname = "lid"\nkind = "test"\n'
        'actions = ["notify", "erase", "refuse"]\n'
    )
    sensor = tamper.TestSensor("lid")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = Agent(load_settings(config), sensors=[sensor])
    assert agent.api is not None
    assert agent.api.serial == serial
    agent.start()  # the lifecycle thread enrols at once: no operational certificate yet
    try:
        _until(lambda: (agent.state.snapshot().get("renewal") or {}).get("not_after") is not None)
        with AgentClient(agent.settings.device.socket) as client:
            first = x509.load_der_x509_certificate(client.certificate()[0])
            assert client.status()["certificate"]["operational"] is True
        renewed = agent.renew()  # over mutual TLS with the first one
        assert renewed.serial_number != first.serial_number
        assert renewed.public_key() != first.public_key()

        sensor.trigger()
        _until(lambda: bool(_events(registry, serial, "device.tamper")))
        reported = _events(registry, serial, "device.tamper")[0]["reported"]
        assert isinstance(reported, dict)
        assert reported["sensor"] == "lid"
        assert reported["actions"] == ["notify", "erase", "refuse"]
        _until(lambda: agent.state.refused is not None)
        with (
            AgentClient(agent.settings.device.socket) as client,
            pytest.raises(AgentError, match="refuses service"),
        ):
            client.sign("idevid", message=b"x")
        assert not (agent.settings.device.state_dir / "ldevid.key").exists()
    finally:
        agent.stop()


def test_agent_learns_the_products_renewal_window(
    server: Server, admin: httpx.Client, authority: Authority, tmp_path: Path
) -> None:
    """The agent thinks renewal is due at once (renew_before = the whole lifetime); the
    product's default [ldevid] window (30 of 90 days) says no: the agent waits for it
    instead of backing off blindly."""
    serial = batch_device(server, admin, "agent-window", recipe=RECIPE)
    token = tmp_path / "est-token"
    token.write_text(_token(authority, "agent-window", serial))
    rot = server.home / "devices" / "agent-window" / "000000"
    config = tmp_path / "device.toml"
    config.write_text(
        f'rot = "soft:{rot}"\nstate_dir = "state"\nsocket = "agent.sock"\n'
        f'server = "{server.url}"\n'
        f'[agent]\nest_token = "{token}"\ntrust = "{server.trust}"\nrenew_before = "90d"\n'
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = Agent(load_settings(config))
    agent.start()
    try:
        lifecycle = agent.lifecycle
        assert lifecycle is not None
        _until(lambda: lifecycle.window_opens is not None)
        with AgentClient(agent.settings.device.socket) as client:
            leaf = x509.load_der_x509_certificate(client.certificate()[0])
        opens = leaf.not_valid_after_utc - datetime.timedelta(days=30)
        assert lifecycle.window_opens is not None
        assert (
            datetime.timedelta(0) <= lifecycle.window_opens - opens <= datetime.timedelta(minutes=3)
        )
    finally:
        agent.stop()
