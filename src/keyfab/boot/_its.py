"""Building a FIT from an image tree source (.its) the way ``mkimage -f`` does.

mkimage hands the .its to dtc and then adds hash values (and, with ``-k``,
signatures) to the tree dtc wrote. keyfab does the same: dtc compiles, keyfab
adds the hashes, the timestamp and, later, signatures. ``/incbin/`` paths are
resolved against the .its directory (dtc runs there with ``-i`` on it), so an
.its that mkimage builds from its own folder builds here from anywhere.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from keyfab.boot._errors import FitError
from keyfab.boot._fit import FitImage
from keyfab.boot._sign import add_hashes, source_date
from keyfab.securefile import read_bounded

ITS_SUFFIXES = frozenset({".its", ".dts"})
MAX_SOURCE = 16 << 20
"""An .its names payloads with /incbin/; its own text is small."""
DTC_TIMEOUT = 120
"""Seconds: dtc reads every /incbin/ payload, which may be large but is local."""
_HEADER = re.compile(rb"\A(?:\s|/\*.*?\*/|//[^\n]*\n)*/dts-v1/\s*;", re.DOTALL)


def is_its(path: Path, text: bytes) -> bool:
    """An .its by its name, or by the ``/dts-v1/;`` header every dtc source starts with."""
    return path.suffix.lower() in ITS_SUFFIXES or _HEADER.match(text) is not None


def compile_its(path: Path, source: bytes) -> bytes:
    """The DTB dtc makes from ``source``; one-line FitError when dtc is absent or fails."""
    folder = path.resolve().parent
    command = ["dtc", "-I", "dts", "-O", "dtb", "-i", str(folder), "-o", "-", "-"]
    try:
        done = subprocess.run(
            command, input=source, cwd=folder, capture_output=True, timeout=DTC_TIMEOUT
        )
    except FileNotFoundError:
        raise FitError(
            "dtc is not installed: install Debian's device-tree-compiler package"
        ) from None
    except subprocess.TimeoutExpired:
        raise FitError(f"dtc did not finish compiling {path} in {DTC_TIMEOUT} s") from None
    if done.returncode != 0:
        raise FitError(f"dtc cannot compile {path}: {_first_error(done.stderr)}")
    return done.stdout


def _first_error(stderr: bytes) -> str:
    """dtc's first error line, with its '<stdin>' file name replaced by nothing useful."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    found = [line for line in lines if "ERROR" in line or "Error" in line] or lines or ["failed"]
    return found[0].replace("<stdin>:", "line ").removeprefix("Error: ")


def build_from_its(path: Path, source: bytes, hash_algo: str = "sha256") -> FitImage:
    """mkimage -f without -k: compile, stamp the time, compute every hash node."""
    fit = FitImage.load(compile_its(path, source))
    fit.fdt.root.set_u32("timestamp", source_date())
    add_hashes(fit, hash_algo)
    return fit


def read_description(path: Path) -> bytes:
    """The description file's bytes, bounded."""
    return read_bounded(path, MAX_SOURCE, "FIT description")
