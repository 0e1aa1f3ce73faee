"""The registry's tables. Public keys and certificates only: never a private key."""

from __future__ import annotations

import datetime
import enum

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
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


class AttestationState(enum.StrEnum):
    """What the newest remote attestation of a device said (``devices.attestation``).

    ``stale`` is never stored: a ``trusted`` device whose ``attested_at`` is older
    than the period asked about is stale *now* (``queries.attestation_counts``),
    so no sweeper has to rewrite ten million rows as time passes.
    """

    NEVER = "never"
    TRUSTED = "trusted"
    FAILED = "failed"
    STALE = "stale"


class CertificateStatus(enum.StrEnum):
    """Where a recorded certificate stands now, as a device's history shows it."""

    GOOD = "good"
    REVOKED = "revoked"  # final: revocation wins over expiry
    EXPIRED = "expired"


class Base(DeclarativeBase):
    pass


class Sequence(Base):
    """Counters the database hands out in blocks: device serial numbers."""

    __tablename__ = "sequences"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


class CaKind(enum.StrEnum):
    ROOT = "root"
    MANUFACTURING = "manufacturing"


class CaRecord(Base):
    """A CA of this workspace: its certificate and where its key lives (a URI).

    Rotation adds rows, never replaces one (migration 0005): the issuing CA is
    the newest unretired manufacturing CA; a retired one stops issuing but keeps
    signing CRLs for what it issued, so the fleet it signed stays checkable.
    """

    __tablename__ = "authorities"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # CaKind
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    key_uri: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())


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
    __table_args__ = (
        UniqueConstraint("batch_id", "slot"),
        Index("ix_devices_attestation", "attestation", "attested_at"),
        # The dashboard counts from these (migration 0011): progress, rate, yield, per day.
        Index("ix_devices_batch_state", "batch_id", "state", "provisioned_at"),
        Index("ix_devices_provisioned_at", "provisioned_at"),
        # Keyset listings by id, of one batch and/or state (migration 0013).
        Index("ix_devices_batch_keyset", "batch_id", "id"),
        Index("ix_devices_state_keyset", "state", "id"),
        Index("ix_devices_batch_state_keyset", "batch_id", "state", "id"),
        Index("ix_devices_product_keyset", "product", "id"),  # migration 0014
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    # The batch's product, copied when the batch creates the device (migration 0014),
    # so a listing of one product is one index range; None without a batch.
    product: Mapped[str | None] = mapped_column(String(128))
    slot: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    rot_kind: Mapped[str | None] = mapped_column(String(32))
    unique_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # SubjectPublicKeyInfo DER
    evidence: Mapped[str | None] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    provisioned_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    # Why the device is failed (migration 0004): on the row, so a listing needs no
    # join on the audit log; cleared when a resumed device is issued or provisioned.
    failure: Mapped[str | None] = mapped_column(String(FAILURE_MAX))
    # The newest attestation verdict and its time (migration 0009): counting devices
    # by state, stale ones included, is one range scan of ix_devices_attestation.
    attestation: Mapped[str] = mapped_column(
        String(16), default=AttestationState.NEVER, server_default=AttestationState.NEVER
    )
    attested_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())


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
    not_after: Mapped[datetime.datetime] = mapped_column(UTCDateTime(), index=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    issued_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime(), index=True)
    revocation_reason: Mapped[str | None] = mapped_column(String(32))  # RFC 5280 name
    # The CA (its ``authorities.name``) that signed it, whose CRL lists it once revoked;
    # None for what no CA of this workspace signed (a vendor's certificates).
    issuer: Mapped[str | None] = mapped_column(String(64))

    def status(self, now: datetime.datetime) -> CertificateStatus:
        """Good, revoked or expired at ``now``."""
        if self.revoked_at is not None:
            return CertificateStatus.REVOKED
        return CertificateStatus.EXPIRED if self.not_after < now else CertificateStatus.GOOD


class CrlRecord(Base):
    """A CRL a CA of the workspace signed. ``number`` is its CRLNumber: never reused.

    Numbers are drawn from one sequence for all the CAs, so each CA's own
    numbers increase strictly too (RFC 5280 allows the gaps between them).

    The newest row is served again until a revocation or its nextUpdate makes
    it stale, so fetching the CRL does not sign (or write) on every request.
    """

    __tablename__ = "crls"
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ca: Mapped[str] = mapped_column(String(64), index=True)  # the signer's authorities.name
    this_update: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[int] = mapped_column(Integer)  # how many entries it lists
    newest_revocation: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    der: Mapped[bytes] = mapped_column(LargeBinary)


class Setting(Base):
    """A workspace setting every station and server must agree on (migration 0010).

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
    __table_args__ = (  # a device's events, the dashboard's search (migration 0011)
        Index("ix_audit_events_subject", "subject", "seq"),
        Index("ix_audit_events_kind", "kind", "seq"),
    )
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


class DashboardSession(Base):
    """A dashboard sign-in (migration 0011): only a digest of its secret is kept.

    The session stands for the token or certificate it was opened with, which
    is checked again on every request: revoking either ends the session too.
    """

    __tablename__ = "dashboard_sessions"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(secret), hex
    principal: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(16))
    certificate_serial: Mapped[str | None] = mapped_column(String(42))
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class CmpSecret(Base):
    """A one-time CMP bootstrap secret: its reference (the senderKID), never the secret.

    The secret is HMAC(the workspace's CMP key file, reference), so the service
    recomputes it and the database alone gives nothing away. ``approved_at``
    null while ``needs_approval``: issuance is deferred (polling) until an
    operator approves.
    """

    __tablename__ = "cmp_secrets"
    reference: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_serial: Mapped[str] = mapped_column(String(64))
    uses_left: Mapped[int] = mapped_column(Integer)
    needs_approval: Mapped[int] = mapped_column(Integer)  # 0 or 1: portable on every engine
    approved_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class CmpTransaction(Base):
    """One CMP transaction, shared by every worker and station on the registry.

    ``nonce`` is the senderNonce of keyfab's last answer: the next message of
    the transaction must echo it as recipNonce, so a replay is refused. A
    transactionID is used once, ever (the primary key).
    """

    __tablename__ = "cmp_transactions"
    __table_args__ = (Index("ix_cmp_transactions_expiry", "state", "expires_at"),)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # transactionID, hex
    state: Mapped[str] = mapped_column(String(16))  # waiting, confirm, done
    nonce: Mapped[str] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(128))  # who started it: reference or cert serial
    device_serial: Mapped[str | None] = mapped_column(String(64))
    certificate_serial: Mapped[str | None] = mapped_column(String(40))
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # deferred request's key
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class Release(Base):
    """A firmware release signed at the factory (``keyfab fit sign --product``).

    ``measurements`` is JSON: per FIT configuration, the digests U-Boot's
    measured boot extends for it (``boot.release_measurements``), per bank, so
    an attestation policy matches event logs against releases, not hand-typed
    hashes. A version is recorded once per product.
    """

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("product", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    product: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    rollback_index: Mapped[int | None] = mapped_column(Integer)
    key_name: Mapped[str] = mapped_column(String(64))  # key-name-hint in the control DTB
    key_fingerprint: Mapped[str] = mapped_column(String(64))  # sha256(SPKI DER), hex
    algorithm: Mapped[str] = mapped_column(String(32))  # sha256,rsa2048 ...
    image: Mapped[str] = mapped_column(String(255))  # the file name signed
    measurements: Mapped[str] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class AttestationPolicy(Base):
    """A product's attestation policy: its TOML text as set, validated before storing."""

    __tablename__ = "attestation_policies"
    product: Mapped[str] = mapped_column(String(128), primary_key=True)
    policy: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))  # sha256 of the text, for the audit log
    updated_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())


class AttestationNonce(Base):
    """A one-time attestation challenge: only the SHA-256 of the nonce is kept.

    The nonce itself is no secret (it travels in the clear and ends up in the
    quote), but keeping only its digest means the table cannot be used to answer
    for a device. ``used_at`` marks it spent; expired rows are purged per device
    when it asks for its next challenge.
    """

    __tablename__ = "attestation_nonces"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(nonce), hex
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime())


class AttestationResult(Base):
    """One verification of a device's evidence: verdict, why, and what the TPM said.

    The counters are those of the quote (TPMS_CLOCK_INFO and firmwareVersion),
    null when the quote never verified; the next verification compares against
    the newest non-null ones (a reboot, a clock going backwards).
    """

    __tablename__ = "attestation_results"
    __table_args__ = (Index("ix_attestation_results_device", "device_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"))
    at: Mapped[datetime.datetime] = mapped_column(UTCDateTime())
    verdict: Mapped[str] = mapped_column(String(16))  # trusted or failed
    reasons: Mapped[str] = mapped_column(Text)  # JSON list of strings
    notes: Mapped[str] = mapped_column(Text)  # JSON list: reboots and restarts seen
    bank: Mapped[str | None] = mapped_column(String(8))
    pcrs: Mapped[str] = mapped_column(Text)  # JSON {"index": "hex"}
    reset_count: Mapped[int | None] = mapped_column(BigInteger)
    restart_count: Mapped[int | None] = mapped_column(BigInteger)
    clock: Mapped[int | None] = mapped_column(BigInteger)  # milliseconds
    firmware_version: Mapped[str | None] = mapped_column(String(16))  # u64, hex


class DeviceCount(Base):
    """How many devices are in one (batch, state, attestation) cell (migration 0012).

    Kept by triggers on ``devices`` (never written by keyfab's code), so the
    fleet and batch pages add a few hundred counter rows instead of counting a
    million devices. ``batch_id`` 0 stands for devices without a batch. On
    PostgreSQL each backend adds to the row of its own ``slot`` (its process id
    modulo 16), so concurrent stations do not queue on one hot row; readers sum
    the slots. SQLite has one writer at a time and always uses slot 0.
    """

    __tablename__ = "device_counts"
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    batch_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(16), primary_key=True)
    attestation: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class DeviceTimeline(Base):
    """How many devices of a batch fall in one UTC minute (migration 0012), by what happened.

    ``kind`` ``provisioned`` counts devices by ``provisioned_at``; ``trusted``
    counts devices whose newest attestation is trusted by ``attested_at`` (so
    "stale" is a sum of old minutes). ``minute`` is ``YYYY-MM-DD HH:MM``: an
    hour or a day is a prefix of it. Kept by the same triggers, slotted the same way.
    """

    __tablename__ = "device_timeline"
    __table_args__ = (Index("ix_device_timeline_minute", "kind", "minute"),)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    batch_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    minute: Mapped[str] = mapped_column(String(16), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(BigInteger)
