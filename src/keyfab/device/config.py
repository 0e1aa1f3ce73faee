"""The device configuration file (``/etc/keyfab/device.toml``), shared by the CLI and agent.

Strict like recipes: an unknown key is an error naming it. ``[agent]``,
``[tamper]`` and ``[boot]`` belong to the agent (``keyfab agent``): they pass
through here and ``keyfab.agent.policy`` checks them as strictly::

    rot = "tpm2:tcti=device:/dev/tpmrm0"
    state_dir = "/var/lib/keyfab"
    identity = "idevid"                 # the key whose certificate is the device's identity
    pcrs = [0, 2, 4, 7]                 # the product's PCR selection for lock/unlock
    pcr_bank = "sha256"
    policy_key = "/etc/keyfab/maker-policy.pem"   # the maker's policy-signing public key
    server = "https://factory.example.com"        # EST and attestation
    socket = "/run/keyfab/agent.sock"
    group = "keyfab"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keyfab.errors import ConfigError
from keyfab.names import check_name
from keyfab.rot import pcr_policy
from keyfab.securefile import read_bounded

MAX_CONFIG = 64 * 1024
DEFAULT_CONFIG = Path("/etc/keyfab/device.toml")
DEFAULT_PCRS = (0, 2, 4, 7)
"""Firmware code, option ROMs, boot loader, Secure Boot policy (TCG PC Client)."""


class DeviceConfig(BaseModel):
    """One device's settings; paths are taken relative to the file's directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rot: str = Field(description="the root of trust's URI: tpm2:..., pkcs11:..., soft:DIR")
    state_dir: Path = Field(description="where the device keeps its certificate and policies")
    identity: str = "idevid"
    pcrs: tuple[int, ...] = DEFAULT_PCRS
    pcr_bank: str = "sha256"
    policy_key: Path | None = None
    server: str | None = None
    socket: Path = Path("/run/keyfab/agent.sock")
    group: str | None = None
    agent: dict[str, Any] = Field(default_factory=dict)  # keyfab agent's, read there
    tamper: dict[str, Any] = Field(default_factory=dict)
    boot: dict[str, Any] = Field(default_factory=dict)

    @field_validator("identity")
    @classmethod
    def _label(cls, value: str) -> str:
        return check_name("label", value)

    @field_validator("pcrs")
    @classmethod
    def _pcrs(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return pcr_policy.check_selection("sha256", value)

    @field_validator("pcr_bank")
    @classmethod
    def _bank(cls, value: str) -> str:
        pcr_policy.check_selection(value, [0])
        return value

    @field_validator("server")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("server must be an http(s) URL")
        return value

    def policy_key_der(self) -> bytes | None:
        """The maker's policy-signing public key as SPKI DER, if configured."""
        if self.policy_key is None:
            return None
        from keyfab.device.policy import read_public_key

        return read_public_key(self.policy_key)


def load_config(path: Path = DEFAULT_CONFIG) -> DeviceConfig:
    """The device configuration at ``path``, or ConfigError naming the first problem."""
    source = read_bounded(path, MAX_CONFIG, "device config")
    try:
        data = tomllib.loads(source.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        config = DeviceConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{path}: {where}: {message}") from None
    return _relative_to(config, path.parent)


def _relative_to(config: DeviceConfig, base: Path) -> DeviceConfig:
    """Relative paths in the file mean relative to the file, not to the caller's directory."""

    def absolute(value: Path | None) -> Path | None:
        return None if value is None or value.is_absolute() else base / value

    changes: dict[str, object] = {
        name: absolute(getattr(config, name))
        for name in ("state_dir", "policy_key", "socket")
        if absolute(getattr(config, name)) is not None
    }
    rot = config.rot
    if rot.startswith("soft:") and not Path(rot[5:]).is_absolute():
        changes["rot"] = f"soft:{base / rot[5:]}"
    return config.model_copy(update=changes)
