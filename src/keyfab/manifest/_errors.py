"""Errors of the manifest package, children of keyfab's one exception tree.

A manifest holds thousands of entries and one bad entry must not hide the
others, so entry errors carry where they happened (index and uniqueId) and the
flows collect them into per-entry reports instead of stopping at the first.
"""

from __future__ import annotations

from keyfab.errors import KeyfabError, VerificationError


class ManifestError(KeyfabError):
    """The manifest file as a whole cannot be read (not a JSON array, too large)."""


class EntryError(VerificationError):
    """One entry is malformed or does not verify; the message names the entry."""

    def __init__(self, index: int, unique_id: str | None, reason: str) -> None:
        self.index = index
        self.unique_id = unique_id
        self.reason = reason
        super().__init__(f"{describe_entry(index, unique_id)}: {reason}")


def describe_entry(index: int, unique_id: str | None) -> str:
    """How messages name an entry: its position, and its uniqueId when known."""
    if unique_id is None:
        return f"entry {index}"
    return f"entry {index} ({unique_id})"
