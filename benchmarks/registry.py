"""The registry at scale: lookups, keyset pages, counts and audit verification over N devices.

Builds a workspace whose registry holds N devices (default 10,000,000) in
batches of 10,000 over three products, and as many audit events, then times
the real functions the CLI and the API call:

* build: COPY on PostgreSQL (a throw-away cluster on loopback unless
  ``--database-url``), batched ``executemany`` on SQLite (``--sqlite``);
* lookup by serial and by unique id (``queries.device`` /
  ``device_by_unique_id``): p50 and p99 against 2 ms;
* keyset pages (``queries.device_page``) first, middle and last, unfiltered
  and by state, batch and product: p50 and p99 against 10 ms;
* counts (``queries.fleet``, ``queries.attestation_counts``, as they stand:
  since migration 0012 sums of trigger-maintained counters): median and worst
  against 50 ms;
* ``keyfab audit verify`` in a child process: events/s, MB/s of hashed
  bytes, the ratio to ``sha256sum`` over exactly those bytes (written to a
  file as the events are built, timed in the same run), and peak RSS (VmHWM);
* with ``--manifest-entries M``: ``keyfab manifest import`` of an M-entry
  signed manifest in a child process, entries/s and peak RSS.

    python benchmarks/registry.py [--devices N] [--sqlite | --database-url URL]
                                  [--rounds R] [--manifest-entries M]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.server.postgres

from keyfab import audit
from keyfab.audit._stream import field
from keyfab.authority import Authority, initialise
from keyfab.registry import Registry, queries
from keyfab.rot.soft import SoftRotWarning
from keyfab.workspace import Workspace
from tests.server.postgres import Cluster, binaries

PER_BATCH = 10_000
CHUNK = 50_000
PRODUCTS = 3
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
EVENT_DATA = (
    '{"batch":"bench-%05d","certificate":"%032x","key":"idevid","profile":"idevid",'
    '"station":"station-1"}'
)

CHILD_VERIFY = r"""
import sys, time
from keyfab.cli import main
sys.argv = ["keyfab", "--home", sys.argv[1], "audit", "verify", "--json"]
start = time.perf_counter()
try:
    main()
except SystemExit as stop:
    if stop.code:
        raise
spent = time.perf_counter() - start
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(f"\nBENCH {spent} {peak}", file=sys.stderr)
"""


def _device_line(i: int) -> tuple[Any, ...]:
    """One device: batch, product, slot, state (1 in 500 failed), unique id, times, attestation."""
    b = i // PER_BATCH
    failed = i % 500 == 7
    created = T0 + datetime.timedelta(seconds=i // 50)
    return (
        f"SN{i:09d}", b + 1, f"product-{b % PRODUCTS}", i % PER_BATCH,
        "failed" if failed else "provisioned", "soft",
        f"{i * 2654435761 % (1 << 64):016x}{i:08x}", created,
        None if failed else created + datetime.timedelta(seconds=1),
        "CSR signature does not verify" if failed else None,
        "trusted" if i % 4 == 0 else "never", created if i % 4 == 0 else None,
    )  # fmt: skip


DEVICE_COLUMNS = (
    "serial, batch_id, product, slot, state, rot_kind, unique_id, created_at, provisioned_at,"
    " failure, attestation, attested_at"
)


def _batches(count: int) -> list[tuple[Any, ...]]:
    return [
        (b + 1, f"bench-{b:05d}", f"product-{b % PRODUCTS}", "", "", PER_BATCH, "finished", T0)
        for b in range((count + PER_BATCH - 1) // PER_BATCH)
    ]


def _events(head: tuple[int, str], count: int, out: io.BufferedWriter) -> Iterator[tuple[Any, ...]]:
    """Chained certificate.issued events after ``head``; the hashed bytes go to ``out``."""
    seq, prev = head
    prev_bytes = bytes.fromhex(prev)
    for i in range(count):
        seq += 1
        at = T0 + datetime.timedelta(seconds=i // 1000)
        subject, data = f"SN{i:09d}", EVENT_DATA % (i // PER_BATCH, i)
        hashed = prev_bytes + b"".join(
            field(f) for f in (str(seq), at.isoformat(), "certificate.issued", subject, data)
        )
        out.write(hashed)
        digest = hashlib.sha256(hashed)
        hex_digest = digest.hexdigest()
        yield seq, at, "certificate.issued", subject, data, prev, hex_digest
        prev, prev_bytes = hex_digest, digest.digest()


def _pg_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value)


def _copy(raw: Any, table: str, columns: str, rows: Iterator[tuple[Any, ...]]) -> None:
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer: list[str] = []
        for row in rows:
            buffer.append("\t".join(_pg_text(v) for v in row))
            if len(buffer) == CHUNK:
                copy.write("\n".join(buffer) + "\n")
                buffer = []
        if buffer:
            copy.write("\n".join(buffer) + "\n")


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _insert(raw: Any, table: str, columns: str, rows: Iterator[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" for _ in columns.split(","))
    statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
    cursor = raw.cursor()
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(tuple(_sqlite_value(v) for v in row))
        if len(chunk) == CHUNK:
            cursor.executemany(statement, chunk)
            chunk = []
    if chunk:
        cursor.executemany(statement, chunk)


EVENT_COLUMNS = "seq, at, kind, subject, data, prev_hash, hash"
BATCH_COLUMNS = "id, name, product, recipe, recipe_dir, count, state, created_at"


def build(registry: Registry, devices: int, events: int, hashed: Path) -> float:
    """Batches, devices and audit events straight into the registry; seconds spent."""
    start = time.perf_counter()
    postgres = registry.engine.dialect.name == "postgresql"
    load = _copy if postgres else _insert
    with registry.engine.begin() as connection:
        raw = connection.connection.driver_connection
        if not postgres:
            raw.execute("PRAGMA cache_size=-262144")
        head = connection.exec_driver_sql("SELECT seq, hash FROM audit_head WHERE id = 1").one()
        load(raw, "batches", BATCH_COLUMNS, iter(_batches(devices)))
        load(raw, "devices", DEVICE_COLUMNS, (_device_line(i) for i in range(devices)))
        print(f"  devices loaded after {time.perf_counter() - start:.0f} s", flush=True)
        with hashed.open("wb") as out:
            load(raw, "audit_events", EVENT_COLUMNS, _events(tuple(head), events, out))
        connection.exec_driver_sql(
            f"UPDATE audit_head SET seq = {head[0] + events}, hash = "
            "(SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1) WHERE id = 1"
        )
    with registry.engine.connect() as connection:  # statistics and the visibility map
        if postgres:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                "VACUUM ANALYZE"
            )
        else:
            connection.exec_driver_sql("ANALYZE")
    return time.perf_counter() - start


def _times(call: Callable[[], object], rounds: int) -> list[float]:
    spent = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        spent.append((time.perf_counter() - start) * 1000)
    return sorted(spent)


def _p(spent: list[float], q: float) -> float:
    return spent[min(len(spent) - 1, int(len(spent) * q))]


def _row(name: str, spent: list[float], budget: float) -> None:
    p99 = _p(spent, 0.99)
    verdict = "ok" if p99 < budget else "OVER"
    print(
        f"  {name:44} p50 {statistics.median(spent):8.2f} ms  p99 {p99:8.2f} ms  "
        f"(< {budget:g} ms: {verdict})"
    )


def _raw_lookup(registry: Registry) -> tuple[Callable[[str], object], Callable[[], None]]:
    """The baseline: the same seek as one statement on a bare driver connection."""
    raw = registry.engine.raw_connection()
    mark = "%s" if registry.engine.dialect.name == "postgresql" else "?"
    if registry.engine.dialect.name == "postgresql":
        raw.driver_connection.autocommit = True
    statement = f"SELECT * FROM devices WHERE serial = {mark}"

    def seek(serial: str) -> object:
        cursor = raw.cursor()
        cursor.execute(statement, (serial,))
        row = cursor.fetchone()
        cursor.close()
        return row

    return seek, raw.close


def lookups(registry: Registry, devices: int, rounds: int) -> None:
    print("lookups (queries.device: device, batch name and certificates in one statement)")
    picks = [random.randrange(devices) for _ in range(rounds)]
    seek, close = _raw_lookup(registry)
    serials = iter(f"SN{i:09d}" for i in picks)
    base = _times(lambda: seek(next(serials)), rounds)
    close()
    _row("baseline: one SELECT on a bare connection", base, 2)
    serials = iter(f"SN{i:09d}" for i in picks)
    _row("device by serial", _times(lambda: queries.device(registry, next(serials)), rounds), 2)
    uids = iter(_device_line(i)[6] for i in picks)
    _row(
        "device by unique id",
        _times(lambda: queries.device_by_unique_id(registry, next(uids)), rounds),
        2,
    )


def pages(registry: Registry, devices: int, rounds: int) -> None:
    print("keyset pages of 50 (queries.device_page)")
    middle_batch = f"bench-{devices // PER_BATCH // 2:05d}"
    filters: dict[str, dict[str, str]] = {
        "all": {},
        "state=failed": {"state": "failed"},
        f"batch={middle_batch}": {"batch": middle_batch},
        "product=product-1": {"product": "product-1"},
        "batch+state=provisioned": {"batch": middle_batch, "state": "provisioned"},
    }
    for name, where in filters.items():
        for position, after in (("first", 0), ("middle", devices // 2), ("last", devices - 60)):
            spent = _times(
                lambda w=where, a=after: queries.device_page(registry, after=a, limit=50, **w),
                rounds,
            )
            _row(f"{name} {position}", spent, 10)


def counts(registry: Registry, rounds: int) -> None:
    print("counts (queries.fleet / attestation_counts as they stand: counter tables, 0012)")
    stale = datetime.timedelta(days=30)
    for name, call in (
        ("fleet: by state and product", lambda: queries.fleet(registry)),
        ("attestation_counts", lambda: queries.attestation_counts(registry, stale)),
    ):
        spent = _times(call, rounds)
        verdict = "ok" if spent[-1] < 50 else "OVER"
        print(
            f"  {name:44} median {statistics.median(spent):8.1f} ms  worst {spent[-1]:8.1f} ms"
            f"  (< 50 ms: {verdict})"
        )


def verify(registry: Registry, home: Path, hashed: Path, events: int) -> None:
    print("keyfab audit verify against sha256sum over the same bytes (page cache warm)")
    size = hashed.stat().st_size
    subprocess.run(["cat", str(hashed)], check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    subprocess.run(["sha256sum", str(hashed)], check=True, capture_output=True)
    baseline = time.perf_counter() - start
    print(
        f"  sha256sum: {size / 1e6:,.0f} MB in {baseline:.2f} s ({size / baseline / 1e6:.0f} MB/s)"
    )
    start = time.perf_counter()
    with registry.reading() as session:
        report = audit.verify(session)
    spent = time.perf_counter() - start
    print(
        f"  audit.verify (the chain walk, in process): ok={report.ok} {events / spent:,.0f} "
        f"events/s, {size / spent / 1e6:.0f} MB/s in {spent:.2f} s: "
        f"{baseline / spent:.2f}x sha256sum"
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD_VERIFY, str(home)], capture_output=True, text=True, check=False
    )
    marks = [line for line in child.stderr.splitlines() if line.startswith("BENCH ")]
    if child.returncode != 0 or not marks:
        print(f"  audit verify failed: {child.stderr.strip()[-400:]}")
        return
    spent, peak = float(marks[-1].split()[1]), int(marks[-1].split()[2])
    verdict = json.loads(child.stdout)
    print(f"  keyfab audit verify (CLI, child process): ok={verdict['ok']} {verdict['events']:,}")
    print(
        f"    {events / spent:,.0f} events/s, {size / spent / 1e6:.0f} MB/s in "
        f"{spent:.2f} s: {baseline / spent:.2f}x sha256sum (target >= 0.50)"
    )
    print(f"    peak RSS {peak / 1024:.0f} MB (target < 200 MB)")


def _cluster_url(stack: list[Cluster]) -> str:
    bin_dir = binaries()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed: give --database-url or --sqlite")
    cluster = Cluster.start(bin_dir)
    stack.append(cluster)
    return cluster.create_database("bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=None, help="default: as many as devices")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--sqlite", action="store_true", help="SQLite in a temp dir")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--manifest-entries", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (prints it)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SoftRotWarning)
    events = args.devices if args.events is None else args.events
    clusters: list[Cluster] = []
    tmp = Path(tempfile.mkdtemp(prefix="keyfab-registry-bench-"))
    try:
        url = args.database_url or (
            f"sqlite:///{tmp / 'registry.db'}" if args.sqlite else _cluster_url(clusters)
        )
        os.environ["KEYFAB_DATABASE_URL"] = url
        space = Workspace(tmp / "home")
        initialise(space, "Bench")
        with Authority.open(space) as authority:
            registry = authority.registry
            engine = registry.engine.dialect.name
            print(f"{engine}: {args.devices:,} devices, {events:,} audit events", flush=True)
            took = build(registry, args.devices, events, tmp / "hashed.bin")
            print(f"build: {took:.0f} s ({args.devices / took:,.0f} devices/s)", flush=True)
            lookups(registry, args.devices, args.rounds)
            pages(registry, args.devices, max(args.rounds // 10, 20))
            counts(registry, 10)
            verify(registry, space.home, tmp / "hashed.bin", events)
        if args.manifest_entries:
            from benchmarks.registry_manifest import measure

            measure(args.manifest_entries, tmp)
    finally:
        for cluster in clusters:
            cluster.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
