"""The recipe's ``[rot]`` table for PKCS#11 device tokens, checked into a value.

Kept apart from the driver so the format (which options exist, their types, PINs
inline or in files) is read and rejected in one place, before any module loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyfab.errors import ConfigError
from keyfab.rot.options import Pkcs11Options
from keyfab.rot.uri import read_pin_file

_OPTIONS = frozenset(Pkcs11Options.model_fields)  # the names the recipe's schema knows


@dataclass(frozen=True)
class DeviceOptions:
    """How to find (and if asked, initialise) one device's token."""

    module: str | None
    selector: Mapping[str, str]
    pin: str | None = field(default=None, repr=False)
    initialize: bool = False
    so_pin: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, options: Mapping[str, Any], slot: int) -> DeviceOptions:
        """Check every option; ConfigError names the first problem (never a PIN)."""
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(f"pkcs11: unknown [rot] option(s) {', '.join(sorted(unknown))}")
        selector = {k: v for k in ("token", "serial") if (v := _text(options, k)) is not None}
        if not selector:
            raise ConfigError(
                f"pkcs11: [rot] needs token = or serial = to find slot {slot}'s token"
            )
        initialize = options.get("initialize", False)
        if not isinstance(initialize, bool):
            raise ConfigError("pkcs11: [rot] initialize must be true or false")
        parsed = cls(
            _text(options, "module"),
            selector,
            _secret(options, "pin"),
            initialize,
            _secret(options, "so_pin") if initialize else None,
        )
        if initialize and (parsed.so_pin is None or parsed.pin is None or "token" not in selector):
            raise ConfigError("pkcs11: initialize = true needs token, pin and so_pin (or *_file)")
        if initialize and "serial" in selector:
            raise ConfigError("pkcs11: initialize = true finds tokens by label: drop serial =")
        return parsed

    def initial_pins(self) -> tuple[str, str] | None:
        """(SO PIN, user PIN) for a token to initialise if missing; None if not asked."""
        if not self.initialize or self.so_pin is None or self.pin is None:
            return None
        return self.so_pin, self.pin


def _text(options: Mapping[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"pkcs11: [rot] {name} must be a string")
    return value


def _secret(options: Mapping[str, Any], name: str) -> str | None:
    """A PIN given inline (``pin``) or in a file (``pin_file``), never echoed."""
    inline, path = _text(options, name), _text(options, f"{name}_file")
    if inline is not None and path is not None:
        raise ConfigError(f"pkcs11: give {name} or {name}_file, not both")
    return inline if path is None else read_pin_file(path)
