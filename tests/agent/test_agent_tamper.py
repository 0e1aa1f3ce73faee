"""Tamper sensors and their actions, the boot manifest check, and the refusal that
survives a restart until ``rearm``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfab.agent import tamper
from keyfab.agent.client import AgentClient, AgentError
from keyfab.agent.daemon import rearm
from keyfab.agent.manifest import sign_manifest, verify_manifest
from keyfab.errors import ConfigError, KeyNotFoundError, VerificationError
from keyfab.rot.soft import _wrap

from .conftest import StartAgent

pytestmark = pytest.mark.filterwarnings("ignore::keyfab.rot.soft.SoftRotWarning")


def _until(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        threading.Event().wait(0.01)


def test_tamper_erases_and_refuses_until_rearmed(start_agent: StartAgent, tmp_path: Path) -> None:
    sensor = tamper.TestSensor("lid")
    extra = '[[tamper.sensors]]\nname = "lid"\nkind = "test"\nactions = ["log", "erase", "refuse"]'
    agent = start_agent(extra, sensors=[sensor])
    path = agent.settings.device.socket
    with AgentClient(path) as client:
        assert len(client.random(8)) == 8
        sensor.trigger()
        _until(lambda: agent.state.refused is not None)
        with pytest.raises(AgentError, match="refuses service until re-provisioned: tamper at"):
            client.random(8)
        status = client.status()  # status still answers, and says why
        assert status["refused"].startswith("tamper at")
        assert status["events"][-1]["sensor"] == "lid"
    with pytest.raises(KeyNotFoundError):
        agent.service.device.public_key("idevid")  # the keys are gone
    agent.stop()

    again = start_agent(extra, sensors=[tamper.TestSensor("lid")])
    with AgentClient(path) as client, pytest.raises(AgentError, match="refuses service"):
        client.random(8)  # persisted: a restart does not clear it
    again.stop()
    rearm(tmp_path / "device.toml")
    start_agent(extra, sensors=[tamper.TestSensor("lid")])
    with AgentClient(path) as client:
        assert len(client.random(8)) == 8


def test_file_sensor_fires_once_per_transition(tmp_path: Path) -> None:
    value = tmp_path / "value"
    value.write_text("0\n")
    fired: list[str] = []
    watch = tamper.Watch(tamper.FileSensor("case", value), 0.005, lambda s: fired.append(s.name))
    watch.start()

    def readings(n: int) -> None:
        target = watch.polls + n
        _until(lambda: watch.polls >= target)

    try:
        readings(2)
        assert fired == []
        value.write_text("1\n")
        _until(lambda: len(fired) == 1)
        readings(5)
        assert fired == ["case"]  # latched: no new event while it stays tampered
        value.write_text("0\n")
        readings(3)
        value.write_text("1\n")
        _until(lambda: len(fired) == 2)  # cleared, then tampered again: a new event
    finally:
        watch.stop()


def test_gpio_v2_structures_and_calls(tmp_path: Path) -> None:
    """linux/gpio.h layout (uAPI v2) and the call sequence, against a recording ioctl."""
    assert tamper.LINE_CONFIG.size == 272
    assert tamper.LINE_REQUEST.size == 592
    assert tamper.GPIO_V2_GET_LINE_IOCTL == 0xC250B407
    assert tamper.GPIO_V2_LINE_GET_VALUES_IOCTL == 0xC010B40E
    request = tamper.line_request(17, "keyfab-agent", active_low=True)
    fields = tamper.LINE_REQUEST.unpack(request)
    assert fields[0] == 17
    assert fields[64].rstrip(b"\0") == b"keyfab-agent"
    flags = int.from_bytes(fields[65][:8], "little")
    assert flags == tamper.GPIO_V2_LINE_FLAG_INPUT | tamper.GPIO_V2_LINE_FLAG_ACTIVE_LOW
    assert fields[66] == 1  # num_lines

    chip = tmp_path / "gpiochip0"
    chip.write_bytes(b"")
    line_fd = open(chip, "rb")  # noqa: SIM115 - stands for the line fd the kernel returns
    calls: list[int] = []
    level = [0]

    def ioctl(fd: int, number: int, buffer: bytearray) -> int:
        calls.append(number)
        if number == tamper.GPIO_V2_GET_LINE_IOCTL:
            buffer[-4:] = line_fd.fileno().to_bytes(4, "little", signed=True)
        else:
            assert fd == line_fd.fileno()
            _bits, mask = tamper.LINE_VALUES.unpack(buffer)
            assert mask == 1
            buffer[:8] = level[0].to_bytes(8, "little")
        return 0

    sensor = tamper.GpioSensor("lid", chip, 17, active_low=True, ioctl=ioctl)
    assert not sensor.tampered()
    level[0] = 1
    assert sensor.tampered()
    sensor.close()
    assert calls == [tamper.GPIO_V2_GET_LINE_IOCTL] + [tamper.GPIO_V2_LINE_GET_VALUES_IOCTL] * 2


def _maker(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "maker.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, public


def test_boot_manifest_mismatch_refuses_service(start_agent: StartAgent, tmp_path: Path) -> None:
    key, public = _maker(tmp_path)
    kernel = tmp_path / "Image"
    kernel.write_bytes(b"kernel 6.6")
    manifest = tmp_path / "boot.manifest"
    manifest.write_bytes(sign_manifest(_wrap("maker", key), "2.1", [kernel]))
    extra = f'[boot]\nmanifest = "{manifest}"\nkey = "{public}"\non_mismatch = ["log", "refuse"]'
    agent = start_agent(extra)
    assert agent.state.snapshot()["boot"]["ok"] is True
    agent.stop()

    kernel.write_bytes(b"kernel 6.6 with a backdoor")
    agent = start_agent(extra)
    with AgentClient(agent.settings.device.socket) as client:
        with pytest.raises(AgentError, match=r"boot\.mismatch"):
            client.sign("idevid", message=b"x")
        boot = client.status()["boot"]
    assert boot["ok"] is False
    assert boot["problems"] == [f"{kernel}: SHA-256 differs from the manifest"]


def test_manifest_signature_and_shape(tmp_path: Path) -> None:
    key, _ = _maker(tmp_path)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    target = tmp_path / "f"
    target.write_bytes(b"x")
    signed = sign_manifest(_wrap("maker", key), "1", [target])
    assert verify_manifest(signed, spki)[0] == "1"
    rogue = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError, match="not signed by the maker"):
        verify_manifest(sign_manifest(_wrap("rogue", rogue), "1", [target]), spki)
    edited = signed.replace(b'"release": "1"', b'"release": "2"')
    with pytest.raises(VerificationError):
        verify_manifest(edited, spki)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_manifest_parser_refuses_garbage_with_one_error(data: bytes) -> None:
    spki = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises((ConfigError, VerificationError)):
        verify_manifest(data, spki)
