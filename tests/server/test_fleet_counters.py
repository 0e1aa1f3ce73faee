"""The device counters of migration 0012 against COUNT(*), on SQLite and PostgreSQL.

The triggers must keep ``device_counts`` and ``device_timeline`` equal to what
a scan of ``devices`` says after any mix of inserts, updates (state,
attestation, batch, times, and columns they do not count) and deletes, also
when several connections write at once (PostgreSQL's slots), and the
migration must back-fill them from a registry that already holds devices.
"""

from __future__ import annotations

import datetime
import itertools
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, delete, func, insert, select, update
from sqlalchemy import text as sql

from keyfab.registry import AttestationState, Batch, Device, DeviceState, Registry, queries
from keyfab.registry.db import REVISIONS, _alembic
from keyfab.registry.models import DeviceCount, DeviceTimeline
from tests.server.postgres import Cluster

T0 = datetime.datetime(2026, 12, 1, 8, 0, tzinfo=datetime.UTC)
STATES = [s.value for s in DeviceState]
VERDICTS = [AttestationState.NEVER, AttestationState.TRUSTED, AttestationState.FAILED]
_names = itertools.count()
Tally = Counter[tuple[object, ...]]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.create_database(f"counters{next(_names)}")


@pytest.fixture
def registry(url: str) -> Iterator[Registry]:
    opened = Registry.open(url, create=True)
    yield opened
    opened.dispose()


def _batches(connection: Connection, count: int) -> None:
    connection.execute(
        insert(Batch),
        [{"id": i, "name": f"b{i}", "product": f"p{i % 2}", "recipe": "", "recipe_dir": "/",
          "count": 100, "state": "running", "created_at": T0} for i in range(1, count + 1)],
    )  # fmt: skip


def _device(rng: random.Random, n: int) -> dict[str, object]:
    attested = rng.choice(VERDICTS)
    return {
        "serial": f"SN{n:06d}",
        "batch_id": rng.choice([None, 1, 2, 3]),
        "state": rng.choice(STATES),
        "created_at": T0,
        "provisioned_at": rng.choice([None, T0 + datetime.timedelta(seconds=rng.randrange(7200))]),
        "attestation": attested,
        "attested_at": None if attested == "never" else T0 + datetime.timedelta(minutes=n % 90),
    }


def _change(connection: Connection, rng: random.Random, ids: list[int]) -> None:
    """One random write: the kinds a station, the attestation service or an operator make."""
    chosen = rng.sample(ids, k=min(len(ids), rng.randint(1, 8)))
    where = Device.id.in_(chosen)
    kind = rng.randrange(6)
    moment = T0 + datetime.timedelta(seconds=rng.randrange(7200))
    if kind == 0:
        connection.execute(update(Device).where(where).values(state=rng.choice(STATES)))
    elif kind == 1:
        values = {"state": DeviceState.PROVISIONED, "provisioned_at": moment, "failure": None}
        connection.execute(update(Device).where(where).values(**values))
    elif kind == 2:
        verdict = rng.choice(VERDICTS[1:])
        connection.execute(
            update(Device).where(where).values(attestation=verdict, attested_at=moment)
        )
    elif kind == 3:
        connection.execute(update(Device).where(where).values(batch_id=rng.choice([None, 1, 2])))
    elif kind == 4:
        connection.execute(update(Device).where(where).values(failure="not counted"))
    else:
        connection.execute(delete(Device).where(Device.id == chosen[0]))
        ids.remove(chosen[0])


def _minute(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _scanned(connection: Connection) -> tuple[Tally, Tally]:
    """What COUNT(*) over ``devices`` says: per cell, and per (kind, batch, minute)."""
    cells: Tally = Counter()
    times: Tally = Counter()
    columns = (Device.batch_id, Device.state, Device.attestation, Device.provisioned_at,
               Device.attested_at)  # fmt: skip
    for batch_id, state, attestation, provisioned, attested in connection.execute(select(*columns)):
        batch = batch_id or 0
        cells[(batch, state, attestation)] += 1
        if provisioned is not None:
            times[("provisioned", batch, _minute(provisioned))] += 1
        if attestation == "trusted" and attested is not None:
            times[("trusted", batch, _minute(attested))] += 1
    return cells, times


def _counted(connection: Connection) -> tuple[Tally, Tally]:
    """What the counters say, slots summed, empty cells left out."""
    c, t = DeviceCount, DeviceTimeline
    cells = connection.execute(
        select(c.batch_id, c.state, c.attestation, func.sum(c.n)).group_by(
            c.batch_id, c.state, c.attestation
        )
    )
    times = connection.execute(
        select(t.kind, t.batch_id, t.minute, func.sum(t.n)).group_by(t.kind, t.batch_id, t.minute)
    )
    return (
        Counter({tuple(row[:-1]): int(row[-1]) for row in cells if row[-1]}),
        Counter({tuple(row[:-1]): int(row[-1]) for row in times if row[-1]}),
    )


def _check(registry: Registry) -> None:
    with registry.engine.connect() as connection:
        assert _counted(connection) == _scanned(connection)
        states = dict(
            connection.execute(select(Device.state, func.count()).group_by(Device.state)).all()
        )
    assert queries.fleet(registry).by_state == states


def test_counters_equal_count_after_a_mix_of_writes(registry: Registry) -> None:
    rng = random.Random(18)
    with registry.engine.begin() as connection:
        _batches(connection, 3)
        connection.execute(insert(Device), [_device(rng, n) for n in range(300)])
    _check(registry)
    with registry.engine.begin() as connection:
        ids = list(connection.scalars(select(Device.id)))
        for _ in range(300):
            _change(connection, rng, ids)
        connection.execute(insert(Device), [_device(rng, n) for n in range(300, 340)])
    _check(registry)
    with registry.engine.begin() as connection:  # undone work leaves no count behind
        connection.execute(update(Device).values(state=DeviceState.CANCELLED))
        connection.rollback()
    _check(registry)


def test_concurrent_writers_keep_the_counters_exact(registry: Registry) -> None:
    """Several connections at once (each station's own; on PostgreSQL, their own slots)."""
    with registry.engine.begin() as connection:
        _batches(connection, 3)
        rng = random.Random(7)
        connection.execute(insert(Device), [_device(rng, n) for n in range(400)])
        ids = list(connection.scalars(select(Device.id).order_by(Device.id)))
    errors: list[BaseException] = []

    def station(number: int) -> None:
        mine, rng = ids[number::4], random.Random(number)
        try:
            for _ in range(40):
                with registry.engine.begin() as connection:
                    _change(connection, rng, mine)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=station, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    _check(registry)


def test_queries_read_the_counters(registry: Registry) -> None:
    """Throughput, batch summaries and attestation counts agree with the rows."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    with registry.engine.begin() as connection:
        _batches(connection, 1)
        connection.execute(
            insert(Device),
            [{"serial": f"Q{n}", "batch_id": 1, "state": "provisioned", "created_at": T0,
              "provisioned_at": T0 + datetime.timedelta(minutes=n // 3),
              "attestation": "trusted" if n % 2 else "never",
              "attested_at": now - datetime.timedelta(hours=n) if n % 2 else None}
             for n in range(12)],
        )  # fmt: skip
    per_minute = queries.throughput(registry, batch="b1", since=T0, period="minute").points
    assert per_minute == [(T0 + datetime.timedelta(minutes=m), 3) for m in range(4)]
    assert queries.throughput(registry, since=T0, period="hour").points == [(T0, 12)]
    summary = queries.batch_summary(registry, "b1")
    assert summary.devices == {"provisioned": 12}
    assert summary.last_provisioned == T0 + datetime.timedelta(minutes=3)
    counts = queries.attestation_counts(registry, datetime.timedelta(hours=4, minutes=30))
    # trusted: n = 1, 3, 5, 7, 9, 11 attested n hours ago; 5 and more hours are stale
    assert (counts["trusted"], counts["stale"], counts["never"]) == (2, 4, 6)


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_upgrade_back_fills_the_counters(
    engine_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A registry at 0011 with devices in it: after the upgrade the counters hold them."""
    from alembic import command

    if engine_name == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"old{next(_names)}")
    engine = create_engine(url)
    rng = random.Random(11)
    with engine.begin() as connection:
        command.upgrade(_alembic(connection), "0011")
        _batches(connection, 3)
        connection.execute(insert(Device), [_device(rng, n) for n in range(200)])
    engine.dispose()
    registry = Registry.open(url)
    try:
        with registry.engine.connect() as connection:
            version = connection.execute(sql("SELECT version_num FROM alembic_version")).scalar()
            assert version == REVISIONS[-1]  # 0012 and every later revision applied
        _check(registry)
        with registry.engine.begin() as connection:  # and the triggers run from then on
            ids = list(connection.scalars(select(Device.id)))
            for _ in range(50):
                _change(connection, rng, ids)
        _check(registry)
    finally:
        registry.dispose()
