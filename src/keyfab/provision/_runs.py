"""The batches this process is running, and the signal that asks one to stop.

``run_batch`` registers its run here for as long as it works; ``cancel_batch``
sets the run's stop event and waits for it to finish the chunk in hand, so a
cancelled batch's last chunk is recorded (its devices issued or provisioned)
rather than signed and thrown away. Runs in other processes (another
station, ``keyfab provision run``) learn of a cancel from the batch's state in
the registry, which every chunk reads before it starts and checks again in
the transaction that records it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_lock = threading.Lock()
_runs: dict[str, list[Run]] = {}


@dataclass
class Run:
    """One ``run_batch`` call in this process: asked to stop, and done."""

    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


@contextmanager
def running(batch: str) -> Iterator[Run]:
    """Register a run of ``batch`` for the duration of the block."""
    run = Run()
    with _lock:
        _runs.setdefault(batch, []).append(run)
    try:
        yield run
    finally:
        with _lock:
            _runs[batch].remove(run)
            if not _runs[batch]:
                del _runs[batch]
        run.done.set()


def stop(batch: str, wait: float) -> bool | None:
    """Ask this process's runs of ``batch`` to stop: None if there was none, else
    whether all of them stopped within ``wait`` seconds."""
    with _lock:
        runs = list(_runs.get(batch, ()))
    if not runs:
        return None
    for run in runs:
        run.stop.set()
    deadline = time.monotonic() + wait
    return all(run.done.wait(max(deadline - time.monotonic(), 0.0)) for run in runs)
