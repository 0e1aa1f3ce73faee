"""Reading and atomically writing FIT and control-DTB files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from keyfab.boot._errors import FitError
from keyfab.boot._fdt import Bytes, Fdt, parse
from keyfab.boot._fit import FitImage

MAX_FILE = 1 << 32
"""FIT offsets are 32-bit: nothing larger can be a valid image."""


def read_file(path: Path) -> bytes:
    """The whole file, read once; its size is checked before reading."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise FitError(f"{path} is larger than 4 GiB")
        return path.read_bytes()
    except OSError as error:
        raise FitError(f"cannot read {path}: {error.strerror}") from None


def load_fit(path: Path) -> FitImage:
    return FitImage.load(read_file(path))


def load_dtb(path: Path) -> Fdt:
    return parse(read_file(path))


def write_atomic(path: Path, chunks: Iterable[Bytes]) -> None:
    """Write ``path`` so readers see the old or the new file, never half of one."""
    temporary = path.with_name(f".{path.name}.keyfab-tmp")
    try:
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise FitError(f"cannot write {path}: {error.strerror}") from None
