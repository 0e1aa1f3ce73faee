"""Secret files (private keys, PINs): one way to write them, for every writer in keyfab.

A secret is written to a fresh private temporary file (``O_EXCL|O_NOFOLLOW``,
mode 0600 from the first byte) that is then linked into place:
a crash never leaves half a key, a symlink planted at either name is never
followed, and an existing secret is replaced only when the caller says so.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def write_secret(path: Path, data: bytes, *, replace: bool = False, sync: bool = False) -> None:
    """Create ``path`` (0600) holding ``data``, whole or not at all.

    Without ``replace`` an existing file is an error (``FileExistsError``); with
    it the old file (or a symlink in its place) is swapped out atomically. Any
    other failure is the ``OSError`` that caused it. ``sync`` flushes the bytes
    to disk before the link, for secrets that must survive a power cut; it
    costs a disk flush per file, too much for the soft driver's device keys.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, _FLAGS, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)  # renames over a symlink, never writes through it
        else:
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
