"""Monotonic counters kept in a driver's own JSON state (soft and PUF devices).

Both drivers hold their device state as one dictionary that they write back
when it changed; a counter is a name in its ``counters`` table that only goes up.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from keyfab.errors import ConfigError


class StateCounter:
    """A counter in ``counters``; ``changed`` tells the driver its state must be written."""

    def __init__(self, counters: MutableMapping[str, int], name: str, changed: Callable[[], None]):
        self.name = name
        self._counters = counters
        self._changed = changed

    def read(self) -> int:
        return int(self._counters.get(self.name, 0))

    def advance_to(self, value: int) -> int:
        """Move up to ``value`` (never down); the counter's value afterwards."""
        if value < 0:
            raise ConfigError(f"counter {self.name!r} cannot go below zero")
        new = max(self.read(), value)
        self._counters[self.name] = new
        self._changed()
        return new
