"""Opening one device's root of trust from a recipe's ``[rot]`` table.

String options may use ``{slot}``, ``{batch}`` and ``{home}``; the driver, found
in the table of :mod:`keyfab.rot.drivers`, checks the values it uses.

A path built from placeholders stays where its template puts it: under the
workspace home when it starts with ``{home}``, else under the directory the
template spells out before its first placeholder. Batch names cannot hold ``/``
or ``..`` (:mod:`keyfab.names`), and the resolved path is compared as well, so
neither a name nor a symlink in between moves a device's keys elsewhere. A
literal absolute directory (``/srv/keys/{batch}``) is the recipe author's
choice: recipes are written by whoever administers the workspace, not by the
operator or API caller who names the batch.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keyfab.errors import ConfigError
from keyfab.rot import RootOfTrust, drivers

_FIELDS = frozenset({"slot", "batch", "home"})


def _parts(value: str) -> list[tuple[str, str | None]]:
    """(literal text, field name) pairs of a template, or ConfigError."""
    try:
        return [(text, field) for text, field, _, _ in string.Formatter().parse(value)]
    except ValueError as error:
        raise ConfigError(f"rot option {value!r}: {error}") from None


def check_placeholders(options: Mapping[str, Any]) -> None:
    """Every string option uses only ``{slot}``, ``{batch}`` and ``{home}`` (parse time)."""
    for value in options.values():
        if isinstance(value, str):
            fields = {field for _, field in _parts(value) if field is not None}
            if fields - _FIELDS:
                raise ConfigError(
                    f"rot option {value!r} may only use {{slot}}, {{batch}}, {{home}}"
                )


def _base(template: str, parts: list[tuple[str, str | None]], home: str) -> Path | None:
    """Where a path template's result must stay, or None if it is no path template."""
    if "/" not in template or all(field is None for _, field in parts):
        return None  # a literal value, or a name such as a token label: nothing to confine
    if parts[0] == ("", "home"):
        return Path(home)
    literal = parts[0][0]
    return Path(literal[: literal.rfind("/") + 1] or ".")


def _format(value: Any, context: Mapping[str, object]) -> Any:
    """One option of one device (the recipe's placeholders were checked when it was parsed)."""
    if not isinstance(value, str):
        return value
    parts = _parts(value)
    try:
        formatted = value.format(**context)
    except (ValueError, IndexError, KeyError) as error:
        raise ConfigError(f"rot option {value!r}: {error}") from None
    base = _base(value, parts, str(context["home"]))
    if base is not None and not Path(formatted).resolve().is_relative_to(base.resolve()):
        raise ConfigError(f"rot option {value!r} leads outside {base}")
    return formatted


def device_options(options: Mapping[str, Any], slot: int, batch: str, home: str) -> dict[str, Any]:
    """The driver options of device ``slot``: placeholders filled, paths kept in place."""
    context = {"slot": slot, "batch": batch, "home": home}
    return {k: _format(v, context) for k, v in options.items()}


def open_device(
    driver: str, options: Mapping[str, Any], slot: int, batch: str, home: str
) -> RootOfTrust:
    """The root of trust of device ``slot`` of ``batch``."""
    return drivers.open_device(driver, device_options(options, slot, batch, home), slot)
