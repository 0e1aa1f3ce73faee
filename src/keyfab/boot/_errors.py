"""Errors of the verified-boot package, children of keyfab's one exception tree."""

from __future__ import annotations

from keyfab.errors import ConfigError, KeyfabError, VerificationError


class FdtError(KeyfabError):
    """A flattened device tree is truncated, malformed or out of bounds."""


class FitError(ConfigError):
    """A FIT image or its description is not usable (missing node, bad property)."""


class FitVerificationError(VerificationError):
    """A FIT image did not pass verification; the message says which node and why."""
