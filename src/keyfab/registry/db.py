"""Opening the registry: engines, schema migrations, transactions, serial blocks.

SQLite (a file in the workspace) by default; any SQLAlchemy URL, in particular
``postgresql+psycopg://``, through ``KEYFAB_DATABASE_URL``. Every write
transaction on SQLite starts with ``BEGIN IMMEDIATE`` so that two station
processes never both read the audit head and then race to extend it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text, update
from sqlalchemy.exc import DatabaseError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from keyfab.errors import MissingExtraError, RegistryError
from keyfab.registry.models import Sequence

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
_READ_ONLY = "keyfab_read_only"
REVISIONS = (
    *("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011"),
    "0012",
    "0013",
    "0014",
)
"""Every schema revision this keyfab knows, oldest first (a test checks the scripts).

Knowing them here means opening an up-to-date registry never imports Alembic.
"""


def _alembic(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=60000",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Registry:
    """The database of devices, certificates, batches and audit events."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = create_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            if isinstance(error, ImportError) and error.name in ("psycopg", "psycopg_binary"):
                raise MissingExtraError("a PostgreSQL registry", "postgres") from None
            raise RegistryError(f"cannot use database URL: {error}") from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_setup(self.engine)
        if self.engine.dialect.name == "postgresql":
            # Executemany INSERTs (certificates, audit events, a batch's devices) as
            # multi-row statements, compiled once: psycopg's own executemany runs the
            # INSERT once per row in the server, a chunk's audit append 256 times
            # under the head's lock.
            self.engine.dialect.use_insertmanyvalues_wo_returning = True
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, create: bool = False) -> Registry:
        """Open and bring the schema up to date; refuse a schema newer than this keyfab."""
        registry = cls(url)
        registry.migrate(create=create)
        return registry

    def migrate(self, *, create: bool = False) -> None:
        """Bring the schema to this keyfab's revision; an up-to-date one is only read.

        Checking first without the write lock matters: every CLI command opens
        the registry, and a listing must not queue behind the stations' writes.
        """
        head = REVISIONS[-1]
        try:
            with self.engine.connect() as connection:
                current = _revision(connection.execution_options(**{_READ_ONLY: True}))
            if current == head:
                return
            with self.engine.begin() as connection:
                current = _revision(connection)  # again, under the lock: another may have won
                if current is None and not create:
                    raise RegistryError(
                        f"no keyfab registry at {self.display_url}: run 'keyfab init'"
                    )
                if current is not None and current not in REVISIONS:
                    raise RegistryError(
                        f"the registry schema ({current}) is newer than this keyfab knows "
                        f"(up to {head}): upgrade keyfab"
                    )
                if current != head:
                    from alembic import command

                    command.upgrade(_alembic(connection), "head")
        except DatabaseError as error:  # unreachable, locked, or a file that is no database
            raise RegistryError(f"cannot open registry {self.display_url}: {error.orig}") from None

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back on any error."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it leaves the write lock to writers.

        On a server database it reads one snapshot (REPEATABLE READ, which a
        read-only transaction gets without any risk of serialization failure):
        a long read such as ``keyfab audit verify`` streaming ten million events
        must compare the chain with the head of the same moment, not with a head
        that writers moved while it read.
        """
        options: dict[str, Any] = {_READ_ONLY: True}
        if self.engine.dialect.name != "sqlite":
            options["isolation_level"] = "REPEATABLE READ"
        with self._sessions() as session:
            session.connection(execution_options=options)
            yield session

    @contextmanager
    def lookup(self) -> Iterator[Connection]:
        """A connection for a single-statement read, e.g. the token check of every request.

        On a server database it runs in autocommit mode: one statement is its own
        consistent snapshot, and the BEGIN and COMMIT round trips a transaction
        would add cost more than the lookup itself. SQLite keeps a deferred
        (read-only) transaction, which leaves the write lock to writers.
        """
        with self.engine.connect() as connection:
            if self.engine.dialect.name == "sqlite":
                yield connection.execution_options(**{_READ_ONLY: True})
            else:
                yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def allocate(self, session: Session, name: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers of sequence ``name``; return the first."""
        last = session.execute(
            update(Sequence)
            .where(Sequence.name == name)
            .values(value=Sequence.value + count)
            .returning(Sequence.value)
        ).scalar_one()
        return int(last) - count + 1

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        """``with workspace.registry() as registry:`` closes its connections at the end."""
        self.dispose()


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
