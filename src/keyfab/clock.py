"""The clock: time in keyfab is always timezone-aware UTC, in whole seconds."""

import datetime

UTC = datetime.UTC


def utc_now() -> datetime.datetime:
    """The current time, aware, in UTC, truncated to whole seconds (as X.509 stores it)."""
    return datetime.datetime.now(UTC).replace(microsecond=0)


def as_utc(moment: datetime.datetime) -> datetime.datetime:
    """Read a time back from storage that may have dropped the zone (SQLite does)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
