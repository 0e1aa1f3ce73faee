"""CPU seconds per process from /proc: a figure that does not move with the machine's load."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class ProcessTimes(NamedTuple):
    parent: int
    own: float
    """user + system seconds of the process itself"""
    reaped: float
    """user + system seconds of its children that have exited and been waited for"""


def process_times() -> dict[int, ProcessTimes]:
    """Every live process's parent and CPU seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, ProcessTimes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        own = (int(fields[11]) + int(fields[12])) / tick
        reaped = (int(fields[13]) + int(fields[14])) / tick
        found[int(entry.name)] = ProcessTimes(int(fields[1]), own, reaped)
    return found
