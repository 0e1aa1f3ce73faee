"""The device's status, for ``keyfab agent status`` and ``keyfab device status``.

From the running agent when it answers on its socket; otherwise read from the
device's state directory and root of trust (the agent stopped, or never run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from keyfab.agent.client import AgentClient, AgentError
from keyfab.agent.state import AgentState
from keyfab.device import DeviceApi
from keyfab.device.config import DeviceConfig, load_config
from keyfab.errors import KeyfabError

CERTIFICATE_FILE = "certificate.pem"


def summary(
    config: DeviceConfig, snapshot: dict[str, Any], leaf: Callable[[], x509.Certificate]
) -> dict[str, Any]:
    """Identity, certificate expiry, last attestation, renewal, boot check, tamper state."""
    out: dict[str, Any] = {
        "rot": config.rot.split(":")[0],
        "identity": config.identity,
        "refused": snapshot.get("refused"),
        "events": snapshot.get("events", [])[-10:],
        "attestation": snapshot.get("attestation"),
        "renewal": snapshot.get("renewal"),
        "boot": snapshot.get("boot"),
    }
    try:
        certificate = leaf()
    except (KeyfabError, ValueError) as error:
        out["certificate"] = {"error": str(error)}
    else:
        out["certificate"] = {
            "subject": certificate.subject.rfc4514_string(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "operational": (config.state_dir / CERTIFICATE_FILE).exists(),
        }
    return out


def device_status(config_path: Path, socket: Path | None) -> dict[str, Any]:
    """The agent's answer if it runs; the offline view if not (an explicit --socket must answer)."""
    path = socket
    if path is None and config_path.exists():
        path = load_config(config_path).socket
    if path is not None and (socket is not None or path.exists()):
        try:
            with AgentClient(path, timeout=10.0) as client:
                return {"agent": "running", **client.status()}
        except AgentError:
            if socket is not None:
                raise
    return offline_status(config_path)


def offline_status(config_path: Path) -> dict[str, Any]:
    config = load_config(config_path)
    snapshot = AgentState(config.state_dir).snapshot()

    def leaf() -> x509.Certificate:
        with DeviceApi.from_config(config) as device:
            return x509.load_der_x509_certificate(device.certificate()[0])

    return {"agent": "not running", **summary(config, snapshot, leaf)}
