"""The verify flow: stream a manifest, check each entry, report each one.

Entries are read one at a time (``_stream``), parsed strictly (``_parse``) and
judged by a VerificationPolicy; a failure becomes that entry's report and the
next entry is read. Duplicate uniqueIds are found with a temporary on-disk
SQLite table rather than a Python set, so memory stays flat for any file size.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from keyfab.errors import VerificationError
from keyfab.manifest._errors import EntryError, describe_entry
from keyfab.manifest._parse import parse_entry_bytes
from keyfab.manifest._policy import VerificationPolicy, VerifiedEntry
from keyfab.manifest._stream import iter_array

MAX_ENTRY_BYTES = 256 * 1024
"""Largest entry keyfab reads: a real one is under 4 KiB."""


@dataclass(frozen=True)
class EntryReport:
    """The outcome for one entry: verified, or the one-line reason it was not."""

    index: int
    unique_id: str | None
    verified: VerifiedEntry | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.verified is not None

    @property
    def name(self) -> str:
        """How messages name this entry: ``entry 3 (0123...)``."""
        return describe_entry(self.index, self.unique_id)

    def describe(self) -> str:
        """One line naming the entry and what happened to it."""
        return f"{self.name}: verified" if self.ok else f"{self.name}: {self.error}"


class _SeenIds:
    """uniqueIds seen so far, in a temporary SQLite file that spills to disk."""

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        self._db.execute("CREATE TABLE seen (unique_id TEXT PRIMARY KEY, idx INTEGER)")

    def first_index(self, unique_id: str, index: int) -> int | None:
        """The index that first used ``unique_id``, or None after recording this one."""
        row = self._db.execute("SELECT idx FROM seen WHERE unique_id = ?", (unique_id,)).fetchone()
        if row is not None:
            return int(row[0])
        self._db.execute("INSERT INTO seen VALUES (?, ?)", (unique_id, index))
        return None

    def close(self) -> None:
        self._db.close()


def verify_manifest(
    stream: BinaryIO, policy: VerificationPolicy, max_entry_bytes: int = MAX_ENTRY_BYTES
) -> Iterator[EntryReport]:
    """One report per entry, in file order; ManifestError if the file is not an array."""
    seen = _SeenIds()
    try:
        for item in iter_array(stream, max_entry_bytes):
            if item.data is None:
                reason = f"entry is larger than {max_entry_bytes} bytes"
                yield EntryReport(item.index, None, None, reason)
                continue
            yield _verify_one(item.data, item.index, policy, seen)
    finally:
        seen.close()


def _verify_one(data: bytes, index: int, policy: VerificationPolicy, seen: _SeenIds) -> EntryReport:
    try:
        entry = parse_entry_bytes(data, index)
    except EntryError as error:
        return EntryReport(index, error.unique_id, None, error.reason)
    unique_id = entry.element.unique_id
    try:
        verified = policy.verify(entry)
    except VerificationError as error:
        return EntryReport(index, unique_id, None, str(error))
    first = seen.first_index(unique_id, index)
    if first is not None:
        return EntryReport(index, unique_id, None, f"duplicate uniqueId (first in entry {first})")
    return EntryReport(index, unique_id, verified)
