"""Opening one device's root of trust from a recipe's ``[rot]`` table.

String options may use ``{slot}``, ``{batch}`` and ``{home}``; the driver module
(``keyfab.rot.<driver>``) provides ``open_device(options, slot)`` and checks its
own options.
"""

from __future__ import annotations

import importlib
import string
from collections.abc import Mapping
from typing import Any

from keyfab.errors import ConfigError
from keyfab.rot import RootOfTrust

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
    try:
        module = importlib.import_module(f"keyfab.rot.{driver}")
    except ImportError as error:
        raise ConfigError(f"the {driver} driver is not available: {error}") from None
    rot: RootOfTrust = module.open_device(
        {k: _format(v, context) for k, v in options.items()}, slot
    )
    return rot
