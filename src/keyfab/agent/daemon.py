"""``keyfab agent run``: the boot check, the socket, the sensors and the lifecycle, together.

Start order matters: the device is opened and the boot manifest checked
before the socket exists, so no caller is ever served by a device whose boot
check failed. Tamper and boot responses run in a fixed order: refuse service
(persisted), notify the server over a connection made *before* erasing (the
erase removes the credentials it authenticates with), erase, log.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from keyfab.agent import renewal
from keyfab.agent.calls import Service
from keyfab.agent.http import Identity, ServerApi
from keyfab.agent.lifecycle import Lifecycle
from keyfab.agent.manifest import check_boot
from keyfab.agent.peer import group_id
from keyfab.agent.policy import Action, CallPolicy, Settings, load_settings
from keyfab.agent.server import AgentServer, bind
from keyfab.agent.state import AgentState
from keyfab.agent.status import summary
from keyfab.agent.tamper import Sensor, Watch, open_sensor
from keyfab.device import DeviceApi
from keyfab.device.policy import read_public_key
from keyfab.errors import ConfigError, KeyfabError

log = logging.getLogger("keyfab.agent")


class Agent:
    """One device's agent; ``start`` / ``stop``, or ``run`` until SIGTERM."""

    def __init__(
        self,
        settings: Settings,
        *,
        opener: Callable[[], DeviceApi] | None = None,
        sensors: Sequence[Sensor] | None = None,
    ):
        self.settings = settings
        self.state = AgentState(settings.device.state_dir)
        self.service = Service(
            opener or (lambda: DeviceApi.from_config(settings.device)), self.state, self.status
        )
        self.policy = CallPolicy(settings.agent)
        self.sensors = (
            list(sensors)
            if sensors is not None
            else [open_sensor(s) for s in settings.tamper.sensors]
        )
        self._actions = {s.name: s.actions for s in settings.tamper.sensors}
        self._polls = {s.name: s.poll_ms / 1000 for s in settings.tamper.sensors}
        self.api = self._server_api()
        self.lifecycle = (
            None if self.api is None else Lifecycle(settings, self.service, self.state, self.api)
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: list[Watch] = []
        self.server: AgentServer | None = None

    def _server_api(self) -> ServerApi | None:
        if self.settings.device.server is None:
            return None
        try:
            serial = renewal.serial_of(self._leaf())
        except (KeyfabError, ValueError) as error:
            log.warning("no server features: cannot tell the device's serial (%s)", error)
            return None
        return ServerApi(self.settings.device.server, serial, self.settings.agent.trust)

    def _leaf(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.service.device.certificate()[0])

    # start and stop ------------------------------------------------------------------

    def start(self) -> None:
        self.check_boot()
        device = self.settings.device
        gid = None if device.group is None else _gid(device.group)
        self.server = AgentServer(
            bind(device.socket, gid),
            self.service,
            self.policy,
            max_connections=self.settings.agent.workers,
        )
        self._spawn("socket", self.server.serve_forever)
        for sensor in self.sensors:
            poll = self._polls.get(sensor.name, 0.2)
            self._watches.append(Watch(sensor, poll, self.on_tamper).start())
        if self.lifecycle is not None:
            lifecycle = self.lifecycle
            self._spawn("lifecycle", lambda: lifecycle.run(self._stop, self._wake))
        log.info("serving %s on %s", device.rot.split(":")[0], device.socket)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(OSError):
                self.settings.device.socket.unlink()
        for watch in self._watches:
            watch.stop()
        for thread in self._threads:
            thread.join(timeout=10)
        self.service.close()

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (systemd stops services with SIGTERM)."""
        done = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: done.set())
        self.start()
        done.wait()
        log.info("stopping")
        self.stop()

    # the boot check and tamper responses -----------------------------------------------

    def check_boot(self) -> None:
        boot = self.settings.boot
        if boot.manifest is None:
            return
        if boot.key is None:
            raise ConfigError("[boot] manifest needs key (the maker's public key)")
        release, problems = check_boot(boot.manifest, read_public_key(boot.key))
        if not problems:
            self.state.note("boot", {"ok": True, "release": release})
            log.info("boot check: release %s as the maker signed it", release)
            return
        self.state.note("boot", {"ok": False, "release": release, "problems": problems[:20]})
        self.respond("boot.mismatch", {"problems": problems[:20]}, boot.on_mismatch)

    def on_tamper(self, sensor: Sensor) -> None:
        actions = self._actions.get(sensor.name, (Action.LOG,))
        self.respond("tamper", {"sensor": sensor.name}, actions)

    def respond(self, kind: str, details: dict[str, Any], actions: Sequence[Action]) -> None:
        """Apply ``actions`` to an event: refuse, notify, erase, log (in that order)."""
        entry = self.state.event(kind, {**details, "actions": [a.value for a in actions]})
        if Action.REFUSE in actions:
            self.state.refuse(f"{kind} at {entry['at']}")
        pending = self._prepare_notice() if Action.NOTIFY in actions else None
        if Action.ERASE in actions:
            self._erase()
        if Action.LOG in actions or not actions:
            log.critical("%s: %s; actions %s", kind, details, [a.value for a in actions])
        if pending is not None:
            self._notify(pending, kind, entry)

    def _prepare_notice(self) -> tuple[Identity, http.client.HTTPConnection] | None:
        identity = renewal.current_identity(self.settings.device.state_dir)
        if self.api is None or identity is None:
            log.error("cannot notify the server: no server or no operational certificate")
            return None
        try:
            return identity, self.api.prepare(identity)
        except OSError as error:  # ssl.SSLError too: unreadable or mismatched files
            log.error("cannot notify the server: TLS identity unusable (%s)", error)
            return None

    def _notify(
        self,
        pending: tuple[Identity, http.client.HTTPConnection],
        kind: str,
        entry: dict[str, Any],
    ) -> None:
        assert self.api is not None
        try:
            self.api.event(pending[0], kind, entry, connection=pending[1])
        except KeyfabError as error:
            log.error("could not notify the server of %s: %s", kind, error)

    def _erase(self) -> None:
        try:
            self.service.device.erase()
        except KeyfabError as error:
            log.error("erase failed: %s", error)
        (self.settings.device.state_dir / renewal.KEY_FILE).unlink(missing_ok=True)
        log.critical("device keys erased")

    # lifecycle: renewal and attestation (agent.lifecycle) ----------------------------

    def renew(self) -> x509.Certificate:
        assert self.lifecycle is not None
        return self.lifecycle.renew()

    def attest(self) -> dict[str, Any]:
        assert self.lifecycle is not None
        return self.lifecycle.attest()

    # status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Identity, certificate expiry, last attestation, tamper state: what an operator asks."""
        out = summary(self.settings.device, self.state.snapshot(), self._leaf)
        return {"serial": None if self.api is None else self.api.serial, **out}


def _gid(name: str) -> int:
    try:
        return group_id(name)
    except KeyError:
        raise ConfigError(f"socket group {name!r} does not exist") from None


def rearm(path: Path) -> None:
    """Clear a refusal after the device was re-provisioned (root, on the device)."""
    settings = load_settings(path)
    AgentState(settings.device.state_dir).rearm()
