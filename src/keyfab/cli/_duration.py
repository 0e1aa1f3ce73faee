"""Durations as options take them: a number and m, h or d (``90m``, ``12h``, ``30d``)."""

from __future__ import annotations

import datetime
import re

from keyfab.errors import ConfigError

_DURATION = re.compile(r"(\d{1,6})([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def duration(text: str | None, option: str) -> datetime.timedelta | None:
    """``text`` as a timedelta (None stays None); one clear error naming ``option`` if wrong."""
    if text is None:
        return None
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"{option} {text!r}: give a number and m, h or d (e.g. 30d)")
    return datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def spelled(value: datetime.timedelta) -> str:
    """A timedelta the way ``duration`` reads it back: ``7d``, ``12h``, ``90m``."""
    minutes = int(value.total_seconds()) // 60
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"
