"""Stations on PostgreSQL: one batch with 1 and 2 workers, and 8 stations at once.

A throw-away PostgreSQL cluster on a loopback port (as the tests make one)
holds the registry. Devices are soft roots of trust in memory, so the figures
are keyfab's and the database's, not the file system's. Printed:
* a batch's rate with 2 worker processes as a multiple of 1 worker's
  (target >= 1.8x);
* 8 stations (8 processes, one batch each as large as the single station's,
  1 worker each) started together: their summed rate against 1 station's rate
  times the machine's cores (what 8 stations can at best get out of them;
  target 1.0).
Rounds are interleaved and the best of each kept: fair when the machine is busy.

    python benchmarks/stations.py [--count N] [--stations S] [--rounds R]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server.postgres
sys.path.insert(0, str(Path(__file__).resolve().parent))  # provision (this folder)

from _procfs import process_times
from provision import IN_MEMORY, keyfab_batch

from keyfab.authority import initialise
from keyfab.provision import create_batch, run_batch
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace
from tests.server.postgres import Cluster, binaries


def _station(home: str, name: str, start: multiprocessing.synchronize.Event) -> None:
    """One station: waits for the start, then provisions its batch with 1 worker."""
    warnings.simplefilter("ignore", SoftRotWarning)
    start.wait()
    summary = run_batch(Workspace(Path(home)), name, 1)
    if summary.failed:
        raise SystemExit(f"station {name}: {summary.failed} devices failed")


def stations(space: Workspace, scratch: Path, count: int, how_many: int) -> float:
    """Devices per second summed over ``how_many`` stations running at once."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    names = [f"st{i}-{time.monotonic_ns()}" for i in range(how_many)]
    for name in names:
        create_batch(space, IN_MEMORY, scratch, name, count)
    processes = [
        context.Process(target=_station, args=(str(space.home), name, start)) for name in names
    ]
    for process in processes:
        process.start()
    started = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a station failed (exit {process.exitcode})")
    return count * how_many / (time.perf_counter() - started)


def _pg_cpu(cluster: Cluster) -> float:
    """CPU seconds PostgreSQL used so far: the postmaster, its reaped and its live backends."""
    pid = int((cluster.folder / "data" / "postmaster.pid").read_text().split()[0])
    times = process_times()
    backends = sum(t.own for t in times.values() if t.parent == pid)
    return times[pid].own + times[pid].reaped + backends


def _own_cpu() -> float:
    """CPU seconds of this process and its reaped children (workers, stations)."""
    now = os.times()
    return now.user + now.system + now.children_user + now.children_system


def costed(
    cluster: Cluster, run: Callable[[], float], devices: int, into: dict[str, list[float]], key: str
) -> None:
    """Run, keep its rate, and the CPU per device it cost keyfab and PostgreSQL (ms).

    On a machine shared with other work the rates move with the load; what a
    device costs in CPU does not, and says how far more workers could scale.
    """
    own, pg = _own_cpu(), _pg_cpu(cluster)
    into.setdefault(key, []).append(run())
    into.setdefault(f"{key}-cpu", []).append((_own_cpu() - own) * 1e3 / devices)
    into.setdefault(f"{key}-pg", []).append((_pg_cpu(cluster) - pg) * 1e3 / devices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="devices per batch")
    parser.add_argument("--stations", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", SoftRotWarning)
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (make setup installs it)")
    cluster = Cluster.start(bin_dir)
    try:
        os.environ["KEYFAB_DATABASE_URL"] = cluster.create_database("stations")
        with tempfile.TemporaryDirectory() as tmp:
            scratch = Path(tmp)
            space = Workspace(scratch / "home")
            initialise(space, "bench")
            keyfab_batch(space, scratch, 100, 1)  # warm up the database and the imports
            runs: dict[str, list[float]] = {}
            per_station = args.count  # each station a batch as large as the single one's
            count, many = args.count, args.stations
            for _ in range(args.rounds):
                costed(cluster, lambda: keyfab_batch(space, scratch, count, 1), count, runs, "one")
                costed(cluster, lambda: keyfab_batch(space, scratch, count, 2), count, runs, "two")
                costed(
                    cluster,
                    lambda: stations(space, scratch, per_station, many),
                    per_station * many,
                    runs,
                    "many",
                )
    finally:
        cluster.stop()
    report(args, runs, per_station)


def report(args: argparse.Namespace, runs: dict[str, list[float]], per_station: int) -> None:
    one, two, many = (max(runs[k]) for k in ("one", "two", "many"))
    cpu = {k: min(runs[f"{k}-cpu"]) for k in ("one", "two", "many")}
    pg = {k: min(runs[f"{k}-pg"]) for k in ("one", "two", "many")}
    cores = os.cpu_count() or 1
    share = one * min(cores, args.stations)
    print(f"stations on PostgreSQL: {args.count} P-256 devices per batch (in memory),", end=" ")
    print(f"best of {args.rounds}, {cores} cores")
    print(f"  {'1 station, 1 worker':<34} {one:7.0f} devices/s")
    print(f"  {'1 station, 2 workers':<34} {two:7.0f} devices/s  {two / one:5.2f}x 1 worker")
    label = f"{args.stations} stations x {per_station} devices"
    print(
        f"  {label:<34} {many:7.0f} devices/s  {many / share:5.2f}x"
        f" (1 station x {min(cores, args.stations)} cores = {share:.0f}/s)"
    )
    print("  CPU per device (ms; least of the rounds), keyfab + PostgreSQL:")
    for key, what in (("one", "1 worker"), ("two", "2 workers"), ("many", "stations")):
        print(f"    {what:<10} {cpu[key]:5.2f} + {pg[key]:5.2f} = {cpu[key] + pg[key]:5.2f}")
    ceiling = (cpu["one"] + pg["one"]) / (cpu["two"] + pg["two"])
    print(f"  2 workers' CPU per device is {1 / ceiling:.2f}x 1 worker's: on {cores} free cores")
    print(f"  they could reach {min(cores, 2) * ceiling:.2f}x; load average now", end=" ")
    print(f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
