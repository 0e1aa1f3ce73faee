"""The clock: time in keyfab is always timezone-aware UTC, in whole seconds."""

import datetime
import re

from keyfab.errors import ConfigError

UTC = datetime.UTC


def utc_now() -> datetime.datetime:
    """The current time, aware, in UTC, truncated to whole seconds (as X.509 stores it)."""
    return datetime.datetime.now(UTC).replace(microsecond=0)


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """Read a time back from storage that may have dropped the zone (SQLite does)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, what: str) -> datetime.timedelta:
    """``30d``, ``12h``, ``15m``, ``90s``: how every keyfab option and query spells a period.

    ``what`` names the option in the error (``--within``), so the one line
    the user sees says which value to fix.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"{what} {text!r}: give a number and s, m, h or d (e.g. 30d)")
    return datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_optional_duration(text: str | None, what: str) -> datetime.timedelta | None:
    """``parse_duration`` for an option that may be left out (None stays None)."""
    return None if text is None else parse_duration(text, what)


def spell_duration(value: datetime.timedelta) -> str:
    """A period the way ``parse_duration`` reads it back: ``7d``, ``12h``, ``90m``, ``45s``."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
