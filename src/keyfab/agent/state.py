"""What the agent must remember across restarts: refusal, tamper events, lifecycle.

One small JSON file (``<state_dir>/agent-state.json``, 0600, replaced
atomically). A refusal survives a restart on purpose: after a tamper event or
a failed boot check the device stays out of service until someone
re-provisions it (``keyfab agent rearm``), whatever restarts in between.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from keyfab import securefile
from keyfab.clock import utc_now
from keyfab.errors import ConfigError

FILE = "agent-state.json"
MAX_STATE = 256 * 1024
MAX_EVENTS = 50


class AgentState:
    """The persisted state; every change is written before the method returns."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / FILE
        self._lock = threading.RLock()
        self._data: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"refused": None, "events": []}
        try:
            data = json.loads(securefile.read_bounded(self.path, MAX_STATE, "agent state"))
        except ValueError:
            raise ConfigError(f"{self.path} is not the agent's state (not JSON)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path} is not the agent's state")
        return data

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = json.dumps(self._data, indent=1, sort_keys=True).encode()
        securefile.write_secret(self.path, body, replace=True)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._data))  # type: ignore[no-any-return]

    @property
    def refused(self) -> str | None:
        value = self._data.get("refused")
        return value if isinstance(value, str) else None

    def _update(self, key: str, value: Any) -> None:
        """Read, change one key, write: what another process (``rearm``) wrote meanwhile
        is kept, not overwritten with this process's older copy."""
        with self._lock:
            self._data = {**self._load(), key: value}
            self._save()

    def refuse(self, reason: str) -> None:
        self._update("refused", reason)

    def rearm(self) -> None:
        self._update("refused", None)

    def event(self, kind: str, details: dict[str, Any]) -> dict[str, Any]:
        """Record a tamper or boot event (newest last, the last MAX_EVENTS kept)."""
        entry = {"at": utc_now().isoformat(), "kind": kind, **details}
        with self._lock:
            events = [*self._load().get("events", []), entry][-MAX_EVENTS:]
            self._update("events", events)
        return entry

    def note(self, key: str, value: dict[str, Any]) -> None:
        """Keep the latest of something (``attestation``, ``renewal``, ``boot``)."""
        self._update(key, {"at": utc_now().isoformat(), **value})
