"""Secret files (private keys, PINs): one way to write them, for every writer in keyfab.

A secret is written to a fresh private temporary file (``O_EXCL|O_NOFOLLOW``,
mode 0600 from the first byte) that is then linked into place:
a crash never leaves half a key, a symlink planted at either name is never
followed, and an existing secret is replaced only when the caller says so.
Before anything is written, the directory itself must be the user's own (see
:func:`check_secret_dir`): a private file in a directory someone else controls
is not private.

Inputs go the other way: :func:`read_bounded` is the one reader of files named
by a user (recipes, objects, PINs, certificates), so ``/dev/zero`` or a FIFO is
refused instead of read until memory runs out.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from keyfab.errors import ConfigError

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
TEMPORARY = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
"""The name ``write_secret`` gives its temporary file: ``.<name>.<8 hex digits>.tmp``."""


class UnsafeDirectoryError(ConfigError):
    """A secret's directory is a symlink, not ours, or writable by others."""


class UnreadableInputError(ConfigError):
    """A user-given input file is missing, not a regular file, or too large."""


def check_secret_dir(directory: Path) -> None:
    """Refuse to put a secret in ``directory`` unless only this user controls it.

    It must be a real directory (a symlink could send the key anywhere), owned
    by the current user, and not group- or world-writable (anyone who may
    write there may rename our file away or plant names we then trust).
    """
    try:
        info = os.lstat(directory)
    except OSError as error:
        raise UnsafeDirectoryError(
            f"cannot use {directory} for secrets: {error.strerror}"
        ) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectoryError(f"refusing to write a secret into {directory}: not a directory")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise UnsafeDirectoryError(
            f"refusing to write a secret into {directory}: owned by another user"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeDirectoryError(
            f"refusing to write a secret into {directory}: writable by group or others"
        )


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file at ``path``, refused if larger than ``limit``.

    Symlinks are followed (an input may live anywhere), but only a regular file
    is read: the type and size are checked on the open descriptor with fstat,
    so no rename in between can swap in ``/dev/zero``, and at most
    ``limit + 1`` bytes are ever read, so a file growing meanwhile is caught.
    ``O_NONBLOCK`` keeps the open of a FIFO from waiting for a writer.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise UnreadableInputError(f"cannot read {what} {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableInputError(f"cannot read {what} {path}: not a regular file")
        if info.st_size > limit:
            raise UnreadableInputError(f"{what} {path} is larger than {limit} bytes")
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise UnreadableInputError(f"cannot read {what} {path}: {error.strerror}") from None
    if len(data) > limit:
        raise UnreadableInputError(f"{what} {path} is larger than {limit} bytes")
    return data


def write_secret(path: Path, data: bytes, *, replace: bool = False, sync: bool = False) -> None:
    """Create ``path`` (0600) holding ``data``, whole or not at all.

    Without ``replace`` an existing file is an error (``FileExistsError``); with
    it the old file (or a symlink in its place) is swapped out atomically. Any
    other failure is the ``OSError`` that caused it, except an unsafe directory
    (:class:`UnsafeDirectoryError`, one line). ``sync`` flushes the bytes
    to disk before the link and the directory after it (so the name survives
    too), for files that must survive a power cut; it costs disk flushes per
    file, too much for the soft driver's device keys.
    """
    check_secret_dir(path.parent)
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
    if sync:
        _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so a new file's name survives a power cut as well as its bytes."""
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
