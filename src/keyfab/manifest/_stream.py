"""An incremental reader for a top-level JSON array, one element at a time.

``json.load`` holds the whole document and every decoded object in memory; a
reel's manifest of 100,000 entries is hundreds of megabytes. This reader scans
the file in fixed-size chunks and cuts out each element's raw text by tracking
only string/escape state and bracket depth; each element is then parsed on its
own. Memory is one chunk plus one element, and an element larger than the limit
is skipped (reported, never buffered) so a hostile file cannot make it grow.

Only the array's structure is checked here; the JSON inside an element is
checked by ``json.loads`` when the element is parsed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from keyfab.manifest._errors import ManifestError

CHUNK = 64 * 1024
_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_STRUCTURE = re.compile(rb'["\[\]{},]')
_IN_STRING = re.compile(rb'["\\]')


@dataclass(frozen=True)
class RawItem:
    """One array element's text, or None if it exceeded the size limit."""

    index: int
    data: bytes | None
    size: int


class _Phase(enum.Enum):
    START = enum.auto()
    BEFORE_ITEM = enum.auto()
    IN_ITEM = enum.auto()
    DONE = enum.auto()


class ArrayReader:
    """Yields the elements of a JSON array read from a binary file object."""

    def __init__(self, stream: BinaryIO, max_item_bytes: int, chunk_size: int = CHUNK) -> None:
        self._stream = stream
        self._max = max_item_bytes
        self._chunk_size = chunk_size
        self._phase = _Phase.START
        self._first = True
        self._depth = 0
        self._in_string = False
        self._skip_escaped = False
        self._parts: list[bytes] = []
        self._size = 0
        self._index = 0
        self._offset = 0

    def __iter__(self) -> Iterator[RawItem]:
        while chunk := self._stream.read(self._chunk_size):
            yield from self._feed(chunk)
            self._offset += len(chunk)
        if self._phase is not _Phase.DONE:
            raise ManifestError("manifest ends before its JSON array is closed")

    def _feed(self, chunk: bytes) -> Iterator[RawItem]:
        pos = 0
        while pos < len(chunk):
            if self._phase is _Phase.IN_ITEM:
                pos, item = self._scan_item(chunk, pos)
                if item is not None:
                    yield item
                continue
            pos = _WHITESPACE.match(chunk, pos).end()  # type: ignore[union-attr]
            if pos < len(chunk):
                pos = self._between_items(chunk, pos)

    def _between_items(self, chunk: bytes, pos: int) -> int:
        char = chunk[pos : pos + 1]
        if self._phase is _Phase.START:
            if char != b"[":
                raise self._error("a manifest must be a JSON array", pos)
            self._phase = _Phase.BEFORE_ITEM
            return pos + 1
        if self._phase is _Phase.DONE:
            raise self._error("unexpected data after the manifest's JSON array", pos)
        if char == b"]" and self._first:
            self._phase = _Phase.DONE
            return pos + 1
        if char in (b"]", b","):
            raise self._error("missing array element", pos)
        self._phase = _Phase.IN_ITEM
        return pos

    def _scan_item(self, chunk: bytes, start: int) -> tuple[int, RawItem | None]:
        """Advance through one element's text; return the position and a finished item."""
        pos = start
        while True:
            if self._skip_escaped and pos < len(chunk):
                self._skip_escaped = False
                pos += 1
            if pos >= len(chunk):
                self._keep(chunk[start:])
                return len(chunk), None
            pattern = _IN_STRING if self._in_string else _STRUCTURE
            found = pattern.search(chunk, pos)
            if found is None:
                self._keep(chunk[start:])
                return len(chunk), None
            pos = found.end()
            char = found.group()
            if self._in_string:
                if char == b"\\":
                    self._skip_escaped = True
                else:
                    self._in_string = False
            elif char == b'"':
                self._in_string = True
            elif char in (b"[", b"{"):
                self._depth += 1
            elif self._depth > 0:
                self._depth -= 0 if char == b"," else 1
            else:
                self._keep(chunk[start : pos - 1])
                return pos, self._finish(char, pos - 1)

    def _keep(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size <= self._max:
            self._parts.append(piece)
        else:
            self._parts.clear()

    def _finish(self, terminator: bytes, pos: int) -> RawItem:
        if terminator == b"}":
            raise self._error("unbalanced '}' in the manifest's JSON array", pos)
        data = b"".join(self._parts).rstrip(b" \t\n\r") if self._size <= self._max else None
        item = RawItem(self._index, data, self._size)
        self._index += 1
        self._parts, self._size, self._first = [], 0, False
        self._phase = _Phase.DONE if terminator == b"]" else _Phase.BEFORE_ITEM
        return item

    def _error(self, message: str, pos: int) -> ManifestError:
        return ManifestError(f"{message} (at byte {self._offset + pos})")


def iter_array(stream: BinaryIO, max_item_bytes: int, chunk_size: int = CHUNK) -> Iterator[RawItem]:
    """The elements of the JSON array in ``stream``, in order, one at a time."""
    return iter(ArrayReader(stream, max_item_bytes, chunk_size))
