"""Dashboard page render times with a large fleet: p50 and p95 per page, against 200 ms.

Builds a workspace whose registry holds N devices (default 1,000,000) in
batches of 10,000, inserted with batched Core statements (one in 500 failed
with a reason, the rest provisioned over the past days, some attested),
then renders every dashboard page in-process through the real application
(FastAPI's test client, a real session cookie) R times each and prints the
p50 and p95 per page. The baseline in the same run is the health endpoint
(one ``SELECT 1``): the ratio shows what each page costs beyond the framework.
``/dashboard/audit/verify`` reads the whole log by design and is left out.

    python benchmarks/dashboard.py [--devices N] [--rounds R] [--database-url URL]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import insert, text

from keyfab.authority import Authority, Principal, Role, initialise, sessions
from keyfab.clock import utc_now
from keyfab.registry import Batch, queries
from keyfab.rot.soft import SoftRotWarning
from keyfab.server import create_app
from keyfab.workspace import Workspace

PER_BATCH = 10_000
BUDGET_MS = 200.0


# One statement per batch makes its devices in the database itself (a recursive CTE on
# SQLite, generate_series on PostgreSQL): no Python row per device, and the counter
# triggers of migration 0012 run as they do for a station's writes.
_ROWS = {
    "sqlite": (
        "WITH RECURSIVE s(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM s WHERE i < :last) ",
        "FROM s",
        "'SN' || printf('%08d', i)",
        "datetime(:created, '+' || (i % 3600) || ' seconds')",
    ),
    "postgresql": (
        "",
        "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS s(i)",
        "'SN' || lpad(i::text, 8, '0')",
        "CAST(:created AS timestamptz) + (i % 3600) * interval '1 second'",
    ),
}


def _statement(dialect: str) -> str:
    head, source, serial, provisioned = _ROWS[dialect]
    failed = "i % 500 = 7"
    return (
        f"{head}INSERT INTO devices (serial, batch_id, product, slot, state, created_at,"
        " provisioned_at, failure, attestation, attested_at) "
        f"SELECT {serial}, :batch, :product, i - :first, CASE WHEN {failed} THEN 'failed' ELSE "
        f"'provisioned' END, :created, CASE WHEN {failed} THEN NULL ELSE {provisioned} END, "
        f"CASE WHEN {failed} THEN 'CSR signature does not verify' END, CASE WHEN i % 4 = 0 "
        f"THEN 'trusted' ELSE 'never' END, CASE WHEN i % 4 = 0 THEN :created END {source}"
    )


def _fill(authority: Authority, devices: int) -> str:
    """Batches and devices straight into the registry; the name of the newest batch."""
    now, name = utc_now(), ""
    engine = authority.registry.engine
    batches = (devices + PER_BATCH - 1) // PER_BATCH
    statement = text(_statement(engine.dialect.name))
    for b in range(batches):
        name = f"bench-{b:04d}"
        created = now - datetime.timedelta(hours=(batches - b) * 2)
        with engine.begin() as connection:
            connection.execute(
                insert(Batch),
                [{"id": b + 1, "name": name, "product": f"product-{b % 3}", "recipe": "",
                  "recipe_dir": "", "count": PER_BATCH, "state": "finished",
                  "created_at": created, "finished_at": created}],
            )  # fmt: skip
            first = b * PER_BATCH
            when: object = created
            if engine.dialect.name == "sqlite":  # as SQLAlchemy stores times there
                when = created.strftime("%Y-%m-%d %H:%M:%S.000000")
            connection.execute(
                statement,
                {"first": first, "last": min(first + PER_BATCH, devices) - 1, "batch": b + 1,
                 "product": f"product-{b % 3}", "created": when},
            )  # fmt: skip
    return name


def _check_counters(authority: Authority) -> None:
    """The trigger-kept totals against one COUNT(*); PostgreSQL's planner statistics refreshed
    (a live registry's autovacuum would have gathered them)."""
    engine = authority.registry.engine
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))
        counted = connection.execute(text("SELECT count(*) FROM devices")).scalar_one()
    total = queries.fleet(authority.registry).total
    assert total == counted, (total, counted)
    print(f"counters: {total:,} devices, as COUNT(*) says")


def _time(client: TestClient, path: str, rounds: int) -> tuple[float, float]:
    spent = []
    for _ in range(rounds):
        start = time.perf_counter()
        answer = client.get(path)
        spent.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    spent.sort()
    return statistics.median(spent), spent[max(int(len(spent) * 0.95) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args()
    warnings.simplefilter("ignore", SoftRotWarning)
    with tempfile.TemporaryDirectory() as tmp:
        if args.database_url:
            import os

            os.environ["KEYFAB_DATABASE_URL"] = args.database_url
        space = Workspace(Path(tmp) / "home")
        initialise(space, "Bench")
        with Authority.open(space) as authority:
            start = time.perf_counter()
            newest = _fill(authority, args.devices)
            print(f"{args.devices:,} devices inserted in {time.perf_counter() - start:.1f} s")
            _check_counters(authority)
            session = sessions.open_session(authority, Principal("bench", Role.ADMIN))
        serial = f"SN{args.devices - 1:08d}"
        pages = [
            "/api/v1/health", "/dashboard", "/dashboard/batches", f"/dashboard/batches/{newest}",
            f"/dashboard/batches/{newest}/progress", "/dashboard/devices",
            "/dashboard/devices?state=failed", f"/dashboard/devices?after={args.devices // 2}",
            f"/dashboard/devices/{serial}", "/dashboard/audit",
            "/dashboard/audit?kind=session.opened", "/dashboard/admin",
        ]  # fmt: skip
        with TestClient(create_app(space), base_url="https://testserver") as client:
            client.cookies.set("kf_session", session.secret, path="/dashboard")
            base = _time(client, pages[0], args.rounds)[0]
            print(f"{'page':48} {'p50 ms':>8} {'p95 ms':>8} {'p50/health':>10}")
            worst = 0.0
            for path in pages:
                p50, p95 = _time(client, path, args.rounds)
                worst = max(worst, p95) if path.startswith("/dashboard") else worst
                print(f"{path:48} {p50:8.1f} {p95:8.1f} {p50 / base:10.1f}")
            verdict = "within" if worst < BUDGET_MS else "OVER"
            print(f"slowest page p95 {worst:.1f} ms: {verdict} the {BUDGET_MS:.0f} ms budget")


if __name__ == "__main__":
    main()
