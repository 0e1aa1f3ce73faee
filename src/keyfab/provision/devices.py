"""Opening one device's root of trust from a recipe's ``[rot]`` table.

String options may use ``{slot}``, ``{batch}`` and ``{home}``; the driver, found
in the table of :mod:`keyfab.rot.drivers`, checks the values it uses.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from keyfab.errors import ConfigError
from keyfab.rot import RootOfTrust, drivers

_FIELDS = frozenset({"slot", "batch", "home"})


def _format(value: Any, context: Mapping[str, object]) -> Any:
    if not isinstance(value, str):
        return value
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as error:
        raise ConfigError(f"rot option {value!r}: {error}") from None
    if fields - _FIELDS:
        raise ConfigError(f"rot option {value!r} may only use {{slot}}, {{batch}}, {{home}}")
    return value.format(**context)


def open_device(
    driver: str, options: Mapping[str, Any], slot: int, batch: str, home: str
) -> RootOfTrust:
    """The root of trust of device ``slot`` of ``batch``."""
    context = {"slot": slot, "batch": batch, "home": home}
    formatted = {k: _format(v, context) for k, v in options.items()}
    return drivers.open_device(driver, formatted, slot)
