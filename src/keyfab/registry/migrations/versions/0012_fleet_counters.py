"""Fleet counters: device totals kept by triggers, so no page counts the devices table.

``device_counts`` holds devices per (batch, state, attestation state) and
``device_timeline`` devices per (batch, UTC minute) by provisioning time and
by trusted-attestation time. Triggers on ``devices`` keep both in the same
transaction as the change, whoever makes it (a station, the service, a manual
SQL fix), so the totals cannot drift from the rows.

- SQLite: row triggers (one writer at a time; every row adds to slot 0).
- PostgreSQL: statement triggers over transition tables, so a chunk of 32
  devices is one grouped upsert per table, not 32; each backend adds to the
  slot of its process id modulo 16, so concurrent stations rarely wait on the
  same counter row. Readers sum the slots.

The counters are back-filled from the existing rows after the triggers exist:
creating a trigger locks ``devices`` against writers until this transaction
commits, so no change falls between the back-fill and the triggers.

A later migration that rebuilds ``devices`` on SQLite (a batch "move and copy")
drops these triggers with the old table and must create them again.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-21
"""

# ruff: noqa: S608 - fixed DDL assembled from this file's constants; nothing comes from input

from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SLOTS = 16
_COLUMNS = "batch_id, state, attestation, provisioned_at, attested_at"
_SQLITE_TRIGGERS = [f"devices_{what}_{op}" for what in ("counted", "timed")
                    for op in ("insert", "update", "delete")]  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "device_counts",
        sa.Column("slot", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("batch_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("attestation", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "device_timeline",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("batch_id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("minute", sa.String(16), primary_key=True),
        sa.Column("slot", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_device_timeline_minute", "device_timeline", ["kind", "minute"])
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _postgres_triggers() if postgres else _sqlite_triggers():
        op.execute(statement)
    for statement in _backfill(_pg_minute if postgres else _sqlite_minute):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for op_name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER devices_counted_{op_name} ON devices")
        op.execute("DROP FUNCTION keyfab_count_devices()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_index("ix_device_timeline_minute", "device_timeline")
    op.drop_table("device_timeline")
    op.drop_table("device_counts")


# --- the minute a time falls in, as text, on each engine ---


def _sqlite_minute(column: str) -> str:
    return f"substr({column}, 1, 16)"  # SQLite keeps UTC times as ISO text


def _pg_minute(column: str) -> str:
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"


def _backfill(at: Callable[[str], str]) -> list[str]:
    """Counters for the rows already there (``at``: a column's minute as SQL)."""
    return [
        "INSERT INTO device_counts (slot, batch_id, state, attestation, n) "
        "SELECT 0, coalesce(batch_id, 0), state, attestation, count(*) FROM devices "
        "GROUP BY coalesce(batch_id, 0), state, attestation",
        "INSERT INTO device_timeline (kind, batch_id, minute, slot, n) "
        f"SELECT 'provisioned', coalesce(batch_id, 0), {at('provisioned_at')}, 0, count(*) "
        "FROM devices WHERE provisioned_at IS NOT NULL "
        f"GROUP BY coalesce(batch_id, 0), {at('provisioned_at')}",
        "INSERT INTO device_timeline (kind, batch_id, minute, slot, n) "
        f"SELECT 'trusted', coalesce(batch_id, 0), {at('attested_at')}, 0, count(*) "
        "FROM devices WHERE attestation = 'trusted' AND attested_at IS NOT NULL "
        f"GROUP BY coalesce(batch_id, 0), {at('attested_at')}",
    ]


# --- SQLite: row triggers ---

_ADD_COUNT = (
    "INSERT INTO device_counts (slot, batch_id, state, attestation, n) "
    "SELECT 0, coalesce({r}.batch_id, 0), {r}.state, {r}.attestation, {d} WHERE true "
    "ON CONFLICT (slot, batch_id, state, attestation) DO UPDATE SET n = n + excluded.n;"
)
_ADD_TIME = (
    "INSERT INTO device_timeline (kind, batch_id, minute, slot, n) "
    "SELECT '{kind}', coalesce({r}.batch_id, 0), substr({r}.{column}, 1, 16), 0, {d} "
    "WHERE {r}.{column} IS NOT NULL{extra} "
    "ON CONFLICT (kind, batch_id, minute, slot) DO UPDATE SET n = n + excluded.n;"
)


def _count(row: str, d: int) -> str:
    return _ADD_COUNT.format(r=row, d=d)


def _times(row: str, d: int) -> str:
    provisioned = _ADD_TIME.format(kind="provisioned", r=row, column="provisioned_at", d=d,
                                   extra="")  # fmt: skip
    trusted = _ADD_TIME.format(kind="trusted", r=row, column="attested_at", d=d,
                               extra=f" AND {row}.attestation = 'trusted'")  # fmt: skip
    return f"{provisioned}\n{trusted}"


def _changed(*columns: str) -> str:
    return " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)


def _sqlite_triggers() -> list[str]:
    timed = ("batch_id", "provisioned_at", "attestation", "attested_at")
    counted = ("batch_id", "state", "attestation")
    on = "ON devices"
    return [
        f"CREATE TRIGGER devices_counted_insert AFTER INSERT {on} BEGIN {_count('NEW', 1)} END",
        f"CREATE TRIGGER devices_counted_delete AFTER DELETE {on} BEGIN {_count('OLD', -1)} END",
        f"CREATE TRIGGER devices_counted_update AFTER UPDATE OF {', '.join(counted)} {on} "
        f"WHEN {_changed(*counted)} BEGIN {_count('OLD', -1)} {_count('NEW', 1)} END",
        f"CREATE TRIGGER devices_timed_insert AFTER INSERT {on} BEGIN {_times('NEW', 1)} END",
        f"CREATE TRIGGER devices_timed_delete AFTER DELETE {on} BEGIN {_times('OLD', -1)} END",
        f"CREATE TRIGGER devices_timed_update AFTER UPDATE OF {', '.join(timed)} {on} "
        f"WHEN {_changed(*timed)} BEGIN {_times('OLD', -1)} {_times('NEW', 1)} END",
    ]


# --- PostgreSQL: statement triggers over transition tables, slotted per backend ---


def _pg_changes(sources: list[tuple[str, int]]) -> str:
    return " UNION ALL ".join(f"SELECT {_COLUMNS}, {d} AS d FROM {t}" for t, d in sources)


def _pg_statements(sources: list[tuple[str, int]]) -> str:
    changes = f"WITH changes AS ({_pg_changes(sources)}) "
    slot = f"pg_backend_pid() % {SLOTS}"
    counts = (
        f"{changes}INSERT INTO device_counts AS c (slot, batch_id, state, attestation, n) "
        f"SELECT {slot}, coalesce(batch_id, 0), state, attestation, sum(d) FROM changes "
        "GROUP BY coalesce(batch_id, 0), state, attestation HAVING sum(d) <> 0 "
        "ORDER BY 2, 3, 4 "
        "ON CONFLICT (slot, batch_id, state, attestation) DO UPDATE SET n = c.n + excluded.n;"
    )
    moved = (
        f"SELECT 'provisioned' AS kind, batch_id, {_pg_minute('provisioned_at')} AS minute, d "
        "FROM changes WHERE provisioned_at IS NOT NULL UNION ALL "
        f"SELECT 'trusted', batch_id, {_pg_minute('attested_at')}, d FROM changes "
        "WHERE attestation = 'trusted' AND attested_at IS NOT NULL"
    )
    times = (
        f"{changes}INSERT INTO device_timeline AS c (kind, batch_id, minute, slot, n) "
        f"SELECT kind, coalesce(batch_id, 0), minute, {slot}, sum(d) FROM ({moved}) AS moved "
        "GROUP BY kind, coalesce(batch_id, 0), minute HAVING sum(d) <> 0 ORDER BY 1, 2, 3 "
        "ON CONFLICT (kind, batch_id, minute, slot) DO UPDATE SET n = c.n + excluded.n;"
    )
    return f"{counts}\n{times}"


def _postgres_triggers() -> list[str]:
    function = f"""CREATE FUNCTION keyfab_count_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {_pg_statements([("new_rows", 1)])}
  ELSIF TG_OP = 'DELETE' THEN
    {_pg_statements([("old_rows", -1)])}
  ELSE
    {_pg_statements([("new_rows", 1), ("old_rows", -1)])}
  END IF;
  RETURN NULL;
END $$"""
    tables = {
        "insert": "NEW TABLE AS new_rows",
        "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "OLD TABLE AS old_rows",
    }
    return [function] + [
        f"CREATE TRIGGER devices_counted_{name} AFTER {name.upper()} ON devices "
        f"REFERENCING {referencing} FOR EACH STATEMENT EXECUTE FUNCTION keyfab_count_devices()"
        for name, referencing in tables.items()
    ]
