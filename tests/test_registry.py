import datetime
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from keyfab.errors import RegistryError
from keyfab.registry import Base, Batch, Registry


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    with registry.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_missing_and_newer_schema_refused(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="keyfab init"):
        Registry.open(f"sqlite:///{tmp_path / 'none.db'}")
    Registry.open(f"sqlite:///{tmp_path / 'r.db'}", create=True).dispose()
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(RegistryError, match=r"schema \(9999\) is newer"):
        Registry.open(f"sqlite:///{tmp_path / 'r.db'}")


def test_serial_blocks_do_not_overlap(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    with registry.transaction() as session:
        assert registry.allocate(session, "device", 10) == 1
        assert registry.allocate(session, "device", 5) == 11
    with registry.transaction() as session:
        assert registry.allocate(session, "device", 1) == 16


def test_times_are_aware_utc_and_naive_refused(tmp_path: Path) -> None:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    moment = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    with registry.transaction() as session:
        session.add(
            Batch(
                name="b",
                product="p",
                recipe="",
                recipe_dir="/",
                count=1,
                state="running",
                created_at=moment,
            )
        )
    with registry.transaction() as session:
        batch = session.query(Batch).one()
        assert batch.created_at == moment
        assert batch.created_at.tzinfo is not None
    with pytest.raises(Exception, match="naive"), registry.transaction() as session:
        session.add(
            Batch(
                name="c",
                product="p",
                recipe="",
                recipe_dir="/",
                count=1,
                state="running",
                created_at=datetime.datetime(2026, 1, 1),
            )
        )


def test_bad_url_is_one_clear_error() -> None:
    with pytest.raises(RegistryError, match="cannot use database URL"):
        Registry("nosuchdialect://x")


def test_known_revisions_match_the_migration_scripts() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from keyfab.registry.db import MIGRATIONS, REVISIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = [r.revision for r in ScriptDirectory.from_config(config).walk_revisions()]
    assert tuple(reversed(scripts)) == REVISIONS


def test_readers_leave_the_write_lock_to_writers(tmp_path: Path) -> None:
    """A long read (audit verify, a listing) must not stall the stations' writes."""
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    with registry.reading() as session:
        session.scalars(select(Batch)).all()  # the read transaction is open now
        with sqlite3.connect(tmp_path / "r.db", timeout=0.5) as writer:
            writer.execute("BEGIN IMMEDIATE")  # raises 'database is locked' if the reader holds it
            writer.execute("UPDATE sequences SET value = value + 1")
    with registry.transaction() as session:
        assert registry.allocate(session, "device", 1) == 2


def test_upgrade_renames_est_device_certificates_and_indexes_expiry(tmp_path: Path) -> None:
    """From an 0004 registry with an EST certificate in it: the row becomes an ldevid
    and the expiry index exists; every other row is untouched."""
    from alembic import command
    from sqlalchemy import create_engine, inspect
    from sqlalchemy import text as sql

    from keyfab.registry.db import _alembic

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    when = "2026-01-01 00:00:00"
    with engine.begin() as connection:
        command.upgrade(_alembic(connection), "0004")
        for number, profile in (("a1", "est-device"), ("b2", "idevid")):
            connection.execute(
                sql(
                    "INSERT INTO certificates (serial_number, key_label, profile, subject,"
                    " not_before, not_after, der, issued_at) VALUES (:n, :n, :p, 'CN=x',"
                    " :t, :t, x'00', :t)"
                ),
                {"n": number, "p": profile, "t": when},
            )
    engine.dispose()
    registry = Registry.open(url)
    with registry.reading() as session:
        rows = dict(session.execute(sql("SELECT serial_number, profile FROM certificates")).all())
    assert rows == {"a1": "ldevid", "b2": "idevid"}
    indexes = {i["name"] for i in inspect(registry.engine).get_indexes("certificates")}
    assert "ix_certificates_not_after" in indexes


def test_upgrade_to_0013_keeps_devices_and_indexes_the_keyset_listings(tmp_path: Path) -> None:
    """From an 0011 registry with devices in it: every row survives, the keyset
    indexes exist, the single-column ones they replace are gone, and the keyset
    plan on SQLite reads the new index instead of sorting."""
    from alembic import command
    from sqlalchemy import create_engine, inspect
    from sqlalchemy import text as sql

    from keyfab.registry import queries
    from keyfab.registry.db import _alembic

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    when = "2026-01-01 00:00:00"
    with engine.begin() as connection:
        command.upgrade(_alembic(connection), "0011")
        connection.execute(
            sql(
                "INSERT INTO batches (id, name, product, recipe, recipe_dir, count, state,"
                " created_at) VALUES (1, 'b1', 'p', '', '', 30, 'finished', :t)"
            ),
            {"t": when},
        )
        for i in range(30):
            connection.execute(
                sql(
                    "INSERT INTO devices (serial, batch_id, slot, state, created_at, attestation)"
                    " VALUES (:s, 1, :i, :st, :t, 'never')"
                ),
                {"s": f"SN{i:03d}", "i": i, "st": "failed" if i % 3 else "provisioned", "t": when},
            )
    engine.dispose()
    registry = Registry.open(url)
    indexes = {i["name"] for i in inspect(registry.engine).get_indexes("devices")}
    assert {"ix_devices_batch_keyset", "ix_devices_state_keyset"} <= indexes
    assert {"ix_devices_batch_id", "ix_devices_state"}.isdisjoint(indexes)
    page = queries.device_page(registry, batch="b1", state="provisioned", after=0, limit=4)
    assert [row.device.serial for row in page.items] == ["SN000", "SN003", "SN006", "SN009"]

    def plan(query: str) -> str:
        with registry.reading() as session:
            return " ".join(
                str(row[-1]) for row in session.execute(sql(f"EXPLAIN QUERY PLAN {query}"))
            )

    state_plan = plan(
        "SELECT id FROM devices WHERE state = 'failed' AND id > 5 ORDER BY id LIMIT 3"
    )
    assert "ix_devices_state_keyset" in state_plan
    assert "TEMP B-TREE" not in state_plan
    with registry.reading() as session:
        assert session.scalar(sql("SELECT count(*) FROM devices")) == 30
    by_product = queries.device_page(registry, product="p", after=0, limit=3)  # back-filled (0014)
    assert [row.device.serial for row in by_product.items] == ["SN000", "SN001", "SN002"]
    product_plan = plan(  # as device_page asks for a product's page
        "SELECT id FROM devices WHERE (product, id) > ('p', 5) AND product <= 'p'"
        " ORDER BY product, id LIMIT 3"
    )
    assert "ix_devices_product_keyset" in product_plan
    assert "TEMP B-TREE" not in product_plan
