"""Secret files (private keys, PINs): one way to write them, for every writer in keyfab.

A secret is written to a fresh private temporary file (``O_EXCL|O_NOFOLLOW``,
mode 0600 from the first byte) that is then linked into place:
a crash never leaves half a key, a symlink planted at either name is never
followed, and an existing secret is replaced only when the caller says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
"""The name ``write_secret`` gives its temporary file: ``.<name>.<8 hex digits>.tmp``."""


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


def sweep_temporaries(directory: Path) -> list[str]:
    """Remove what a killed ``write_secret`` left in ``directory``; the names removed.

    A SIGKILL between creating the temporary file and unlinking it leaves
    ``.<name>.<8 hex>.tmp`` behind: a copy of a secret under a name nobody
    reads. Only regular files of exactly that pattern go; anything else,
    symlinks named like one included, is left alone and never followed. Call it
    only where no ``write_secret`` into ``directory`` can be running (the soft
    driver calls it when its one station opens a device directory).
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if TEMPORARY.fullmatch(entry.name) and _regular(entry):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def _regular(entry: os.DirEntry[str]) -> bool:
    """A regular file itself, not a symlink to one (lstat: the link is never followed)."""
    try:
        return stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)
    except OSError:  # gone meanwhile, or unreadable: not ours to remove
        return False
