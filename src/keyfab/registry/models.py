"""The registry's tables. Public keys and certificates only: never a private key."""

from __future__ import annotations

import datetime
import enum

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from keyfab.clock import as_utc


class UTCDateTime(TypeDecorator[datetime.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every engine.

    SQLite keeps no zone, so values come back naive; this puts UTC back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; use aware UTC")
        return None if value is None else as_utc(value)

    def process_result_value(
        self, value: datetime.datetime | None, dialect: Dialect
    ) -> datetime.datetime | None:
        return None if value is None else as_utc(value)


FAILURE_MAX = 512  # the devices.failure column


class DeviceState(enum.StrEnum):
    """Where a device is in its life. The order is the provisioning order."""

    PENDING = "pending"  # serial reserved, nothing issued yet
    ISSUED = "issued"  # certificate recorded; not yet written back to the device
    PROVISIONED = "provisioned"  # certificate in the device, device locked
    PRE_PROVISIONED = "pre-provisioned"  # arrived provisioned (a vendor manifest)
    FAILED = "failed"  # the flow refused the device (reason in ``failure`` and its event)
    REVOKED = "revoked"
    CANCELLED = "cancelled"  # its batch was cancelled before anything was issued for it


class Base(DeclarativeBase):
    pass


class Sequence(Base):
    """Counters the database hands out in blocks: device serial numbers."""

    __tablename__ = "sequences"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


class CaRecord(Base):
    """A CA of this workspace: its certificate and where its key lives (a URI)."""

    __tablename__ = "authorities"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    key_uri: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class Batch(Base):
    """A run of the provisioning flow over ``count`` device slots."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    product: Mapped[str] = mapped_column(String(128))
    recipe: Mapped[str] = mapped_column(Text)  # the recipe as given, so resume uses the same
    recipe_dir: Mapped[str] = mapped_column(String(1024))  # where its relative files are
    count: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (UniqueConstraint("batch_id", "slot"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    slot: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    rot_kind: Mapped[str | None] = mapped_column(String(32))
    unique_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # SubjectPublicKeyInfo DER
    evidence: Mapped[str | None] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    provisioned_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    # Why the device is failed (migration 0004): on the row, so a listing needs no
    # join on the audit log; cleared when a resumed device is issued or provisioned.
    failure: Mapped[str | None] = mapped_column(String(FAILURE_MAX))


class Certificate(Base):
    __tablename__ = "certificates"
    __table_args__ = (UniqueConstraint("device_id", "key_label"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial_number: Mapped[str] = mapped_column(String(42), unique=True)  # hex, no leading zeros
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), index=True)
    key_label: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(512))
    not_before: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)
    issued_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime(), index=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(32))  # RFC 5280 name


class CrlRecord(Base):
    """A CRL the manufacturing CA signed. ``number`` is its CRLNumber: never reused.

    The newest row is served again until a revocation or its nextUpdate makes
    it stale, so fetching the CRL does not sign (or write) on every request.
    """

    __tablename__ = "crls"
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    this_update: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[int] = mapped_column(Integer)  # how many entries it lists
    newest_revocation: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)


class Setting(Base):
    """A workspace setting every station and server must agree on (migration 0006).

    In the registry rather than a file, so stations sharing a PostgreSQL
    registry issue certificates naming the same public URLs. Written only by
    ``keyfab.authority.publication``.
    """

    __tablename__ = "settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))


class AuditEvent(Base):
    """One link of the hash chain. ``seq`` is assigned by the audit log, not the engine."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    data: Mapped[str] = mapped_column(Text)  # canonical JSON, hashed as stored
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The newest link; locking this row serialises appends across processes."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class ApiToken(Base):
    """A bearer token for the service. Only a SHA-256 digest of its secret is kept.

    The secret is 256 random bits, so a fast hash is enough: nobody can guess
    their way back from the digest. ``uses_left`` makes one-time enrolment tokens;
    ``device_serial`` binds a device token to the one serial it may enrol.
    """

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public lookup handle
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64))  # sha256(secret), hex
    device_serial: Mapped[str | None] = mapped_column(String(64))
    uses_left: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
