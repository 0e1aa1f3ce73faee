"""Opaque cursors for keyset pages: where the next page starts, bound to its filters.

A listing of ten million devices cannot page by offset (each page would read
every row before it), so a page ends with a cursor naming the last device
shown. The cursor is opaque to callers (so the key can change without
breaking them), short, and tied to the filters it was made under: a cursor
taken from ``state=failed`` and replayed with ``batch=b7`` is refused instead
of silently starting somewhere meaningless.

Cursors arrive from untrusted clients: the text is length-checked before it
is decoded, must be canonical base64url of exactly one layout, and names an
id a database can hold. Anything else is one ``InvalidRequestError``.

Layout (13 bytes, base64url without padding, 18 characters):
version (1 byte) | last id shown (8 bytes, big-endian) | filter tag (4 bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping

from keyfab.errors import InvalidRequestError

VERSION = 1
MAX_ID = (1 << 63) - 1
"""The largest id a 64-bit signed key holds (PostgreSQL bigint, SQLite integer)."""
MAX_LENGTH = 64
"""Longer text is refused before decoding (a cursor is 18 characters today)."""
_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SIZE = 13

Scope = Mapping[str, str | None]
"""The filters a listing ran under, by name (None: not filtered on it)."""


def _tag(scope: Scope) -> bytes:
    spelled = json.dumps(sorted((k, v) for k, v in scope.items() if v is not None))
    return hashlib.sha256(spelled.encode()).digest()[:4]


def encode(after: int, scope: Scope) -> str:
    """The cursor for "the page after id ``after``" under the filters ``scope``."""
    if not 0 <= after <= MAX_ID:
        raise ValueError("a cursor's id must fit a 64-bit key")
    raw = bytes([VERSION]) + after.to_bytes(8, "big") + _tag(scope)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str, scope: Scope) -> int:
    """The id after which the page starts; InvalidRequestError for anything not made by
    ``encode`` under the same filters."""
    if len(text) > MAX_LENGTH or not _SHAPE.fullmatch(text):
        raise _invalid()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _invalid() from None
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(raw) != _SIZE or raw[0] != VERSION or canonical != text:
        raise _invalid()  # one spelling per cursor: no padding, no stray low bits
    after = int.from_bytes(raw[1:9], "big")
    if after > MAX_ID:
        raise _invalid()
    if not hmac.compare_digest(raw[9:], _tag(scope)):
        raise InvalidRequestError(
            "this cursor belongs to a listing with other filters: start again without it",
            slug="cursor-mismatch",
        )
    return after


def _invalid() -> InvalidRequestError:
    return InvalidRequestError(
        "not a cursor keyfab made: pass next_cursor from the previous page as it came",
        slug="invalid-cursor",
    )
