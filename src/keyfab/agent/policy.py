"""The agent's own settings: ``[agent]``, ``[tamper]`` and ``[boot]`` of the device config.

Strict like the rest of the file (an unknown key is an error naming it)::

    [agent]
    allow = { sign = ["group:app"], random = ["*"], unlock = ["user:vault"] }
    admins = ["uid:0"]            # may make every call (the agent's own uid always may)
    attest_every = "1h"           # answer the server's challenges this often
    renew_before = "30d"          # renew the operational certificate this long before expiry
    est_token = "/etc/keyfab/est-token"   # first enrolment (simpleenroll); renewals use mTLS
    trust = "/etc/keyfab/server-ca.pem"   # the server's TLS trust anchors
    eventlog = "/sys/kernel/security/tpm0/binary_bios_measurements"

    [[tamper.sensors]]
    name = "lid"
    kind = "gpio"                 # gpio (chip + line), file (a sysfs value), test
    path = "/dev/gpiochip0"
    line = 17
    actions = ["log", "notify", "erase", "refuse"]

    [boot]
    manifest = "/etc/keyfab/boot.manifest"
    key = "/etc/keyfab/maker-boot.pem"
    on_mismatch = ["log", "notify", "refuse"]

Callers are ``uid:N``, ``gid:N``, ``user:NAME``, ``group:NAME`` or ``*``;
names are resolved once, when the agent starts.
"""

from __future__ import annotations

import datetime
import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keyfab.agent.peer import Peer, group_id, user_id
from keyfab.clock import parse_duration
from keyfab.device.config import DEFAULT_CONFIG, DeviceConfig, load_config
from keyfab.errors import ConfigError

CALLS = (
    "sign",
    "verify",
    "ecdh",
    "random",
    "counter",
    "increment",
    "public_key",
    "certificate",
    "lock",
    "unlock",
    "create_key",
    "apply_policy",
    "status",
)
"""What the socket serves; ``erase`` is not among them (only a tamper action erases)."""


class Action(enum.StrEnum):
    LOG = "log"
    NOTIFY = "notify"
    ERASE = "erase"
    REFUSE = "refuse"


_StrictT = TypeVar("_StrictT", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorConfig(_Strict):
    name: str
    kind: str = Field(pattern="^(gpio|file|test)$")
    path: Path | None = None
    line: int = Field(default=0, ge=0, le=511)
    active_low: bool = False
    triggered: str = "1"  # file sensors: the value that means "tampered"
    poll_ms: int = Field(default=200, ge=10, le=60_000)
    actions: tuple[Action, ...] = (Action.LOG,)


class TamperConfig(_Strict):
    sensors: tuple[SensorConfig, ...] = ()


class BootConfig(_Strict):
    manifest: Path | None = None
    key: Path | None = None
    on_mismatch: tuple[Action, ...] = (Action.LOG, Action.REFUSE)


class AgentConfig(_Strict):
    allow: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    admins: tuple[str, ...] = ("uid:0",)
    attest_every: str | None = None
    renew_before: str | None = None
    est_token: Path | None = None
    trust: Path | None = None
    eventlog: Path | None = None
    workers: int = Field(default=32, ge=1, le=1024)

    @field_validator("allow")
    @classmethod
    def _calls(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        unknown = sorted(set(value) - set(CALLS))
        if unknown:
            raise ValueError(f"unknown call {unknown[0]!r} (calls: {', '.join(CALLS)})")
        return value

    def period(self, name: str) -> datetime.timedelta | None:
        text = getattr(self, name)
        return None if text is None else parse_duration(text, f"[agent] {name}")


def section(model: type[_StrictT], data: dict[str, Any], name: str, base: Path) -> _StrictT:
    """One section validated, its relative paths taken relative to the config's directory."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"[{name}] {where}: {first['msg'].removeprefix('Value error, ')}"
        ) from None
    return _absolute(parsed, base)


def _absolute(model: _StrictT, base: Path) -> _StrictT:
    changes: dict[str, object] = {}
    for field, value in model:
        if isinstance(value, Path) and not value.is_absolute():
            changes[field] = base / value
        elif isinstance(value, tuple) and value and isinstance(value[0], BaseModel):
            changes[field] = tuple(_absolute(item, base) for item in value)
    return model.model_copy(update=changes) if changes else model


class CallPolicy:
    """Who may make which call: the config's rules with names resolved to ids."""

    def __init__(self, config: AgentConfig):
        self._admins = _resolve(config.admins) | {("uid", os.getuid())}
        self._allow = {call: _resolve(rules) for call, rules in config.allow.items()}

    def allows(self, peer: Peer, call: str) -> bool:
        rules = self._admins | self._allow.get(call, frozenset())
        if ("*", 0) in rules or ("uid", peer.uid) in rules:
            return True
        groups = {("gid", gid) for gid in peer.groups}
        return bool(groups & rules)


def _resolve(rules: tuple[str, ...]) -> frozenset[tuple[str, int]]:
    resolved = set()
    for rule in rules:
        kind, _, name = rule.partition(":")
        try:
            if rule == "*":
                resolved.add(("*", 0))
            elif kind in ("uid", "user"):
                resolved.add(("uid", user_id(name)))
            elif kind in ("gid", "group"):
                resolved.add(("gid", group_id(name)))
            else:
                raise ConfigError(f"[agent] caller {rule!r}: use uid:, gid:, user:, group: or *")
        except (KeyError, ValueError):
            raise ConfigError(f"[agent] caller {rule!r}: no such user or group") from None
    return frozenset(resolved)


@dataclass(frozen=True)
class Settings:
    device: DeviceConfig
    agent: AgentConfig
    tamper: TamperConfig
    boot: BootConfig


def load_settings(path: Path = DEFAULT_CONFIG) -> Settings:
    """The device config and the agent's sections of it, all checked."""
    device = load_config(path)
    base = path.parent
    return Settings(
        device,
        section(AgentConfig, device.agent, "agent", base),
        section(TamperConfig, device.tamper, "tamper", base),
        section(BootConfig, device.boot, "boot", base),
    )
