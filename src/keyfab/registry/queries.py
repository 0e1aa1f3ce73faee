"""Every read the CLI and the service make of the registry, in one place.

Each function opens its own read-only session (``Registry.reading``: on SQLite it
leaves the write lock to the stations) and returns rows that stay usable after
the session closes, so callers above the registry never hold a session or
import SQLAlchemy. A missing thing is a ``NotFoundError`` whose slug the
service turns into a stable problem type.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cryptography import x509
from sqlalchemy import ColumnElement, Select, func, literal, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import QueryableAttribute, Session, aliased

from keyfab.clock import as_utc, utc_now
from keyfab.errors import InvalidRequestError, NotFoundError, RegistryError
from keyfab.pki.profiles import Profile
from keyfab.registry import cursors
from keyfab.registry.db import Registry
from keyfab.registry.models import (
    ApiToken,
    AttestationPolicy,
    AttestationResult,
    AttestationState,
    AuditEvent,
    AuditHead,
    Batch,
    CaKind,
    CaRecord,
    Certificate,
    DashboardSession,
    Device,
    DeviceCount,
    DeviceState,
    DeviceTimeline,
    Release,
    Setting,
)


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    batch: str | None


@dataclass(frozen=True)
class DeviceRecord:
    """A device, its batch's name and every certificate it has, from one snapshot."""

    device: Device
    batch: str | None
    certificates: Sequence[Certificate]


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate and the device it belongs to, if it is a device's."""

    certificate: Certificate
    device: Device | None

    @property
    def device_serial(self) -> str | None:
        return None if self.device is None else self.device.serial


def _device_query(batch: str | None, state: str | None) -> Select[Device, str]:
    query = select(Device, Batch.name).outerjoin(Batch, Device.batch_id == Batch.id)
    if batch is not None:
        query = query.where(Batch.name == batch)
    if state is not None:
        query = query.where(Device.state == state)
    return query


def device(registry: Registry, serial: str) -> DeviceRecord:
    """One device with its batch and certificates, or NotFoundError (a unique-index seek)."""
    return _one_device(registry, Device.serial == serial, f"serial {serial!r}")


def device_by_unique_id(registry: Registry, unique_id: str) -> DeviceRecord:
    """The device whose root of trust reports ``unique_id``, or NotFoundError."""
    return _one_device(registry, Device.unique_id == unique_id, f"unique id {unique_id!r}")


def _one_device(registry: Registry, where: ColumnElement[bool], what: str) -> DeviceRecord:
    """One statement (device, batch name, each certificate) on a lookup connection.

    A lookup is the hot read of a large registry: one round trip, no BEGIN and
    COMMIT around it on a server database (``Registry.lookup``).
    """
    query = (
        _device_query(None, None)
        .add_columns(Certificate)
        .outerjoin(Certificate, Certificate.device_id == Device.id)
        .where(where)
        .order_by(Certificate.id)
    )
    with registry.lookup() as connection, Session(bind=connection) as session:
        rows = session.execute(query).all()
    if not rows:
        raise NotFoundError(f"no device with {what}", slug="device-not-found")
    found, batch = rows[0][0], rows[0][1]
    return DeviceRecord(found, batch, [row[2] for row in rows if row[2] is not None])


def device_position(registry: Registry, serial: str) -> int:
    """Where device ``serial`` stands in listings (its id): a page can start after it."""
    with registry.reading() as session:
        found = session.scalar(select(Device.id).where(Device.serial == serial))
    if found is None:
        raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
    return int(found)


def certificates_of(session: Session, device_id: int) -> Sequence[Certificate]:
    """A device's certificates in issuing order (inside the caller's session)."""
    return session.scalars(
        select(Certificate).where(Certificate.device_id == device_id).order_by(Certificate.id)
    ).all()


def find_certificate(registry: Registry, serial_number: str) -> CertificateRecord | None:
    """The recorded certificate with ``serial_number`` (lowercase hex) and its device."""
    with registry.reading() as session:
        row = session.execute(
            select(Certificate, Device)
            .outerjoin(Device, Certificate.device_id == Device.id)
            .where(Certificate.serial_number == serial_number)
        ).one_or_none()
    return None if row is None else CertificateRecord(row[0], row[1])


def certificate(registry: Registry, serial_number: str) -> CertificateRecord:
    """As ``find_certificate``, but a missing certificate is a NotFoundError."""
    found = find_certificate(registry, serial_number)
    if found is None:
        raise NotFoundError(f"no certificate {serial_number}", slug="certificate-not-found")
    return found


def issued_certificates(registry: Registry, profile: str | None = None) -> Sequence[Certificate]:
    """Every certificate keyfab has recorded (of one profile), whoever issued it, oldest first."""
    query = select(Certificate).order_by(Certificate.id)
    if profile is not None:
        query = query.where(Certificate.profile == profile)
    with registry.reading() as session:
        return session.scalars(query).all()


def expiring(
    registry: Registry,
    within: datetime.timedelta,
    *,
    include_renewed: bool = False,
    limit: int = 1000,
) -> Sequence[CertificateRecord]:
    """Unrevoked certificates whose notAfter falls between now and now + ``within``,
    soonest first, with their devices (an index range on ``not_after``, migration 0006).

    A device certificate the device has already renewed (it holds a newer
    unrevoked certificate of the same profile, issued later, lasting as long) is left out
    unless ``include_renewed``: the list is of what still has to be renewed.
    """
    now = utc_now()
    newer = aliased(Certificate)
    query = (
        select(Certificate, Device)
        .outerjoin(Device, Certificate.device_id == Device.id)
        .where(
            Certificate.revoked_at.is_(None),
            Certificate.not_after >= now,
            Certificate.not_after <= now + within,
        )
        .order_by(Certificate.not_after, Certificate.id)
        .limit(limit)
    )
    if not include_renewed:
        renewed = (
            select(newer.id)
            .where(
                newer.device_id == Certificate.device_id,
                newer.profile == Certificate.profile,
                newer.revoked_at.is_(None),
                newer.id > Certificate.id,
                newer.not_after >= Certificate.not_after,
            )
            .exists()
        )
        query = query.where(~renewed)
    with registry.reading() as session:
        return [CertificateRecord(c, d) for c, d in session.execute(query)]


def batch_certificates(registry: Registry, batch: str | None) -> Sequence[tuple[str, Certificate]]:
    """(device serial, certificate) for every device certificate, of one batch or all."""
    query = select(Device.serial, Certificate).join(Certificate, Certificate.device_id == Device.id)
    if batch is not None:
        query = query.join(Batch, Device.batch_id == Batch.id).where(Batch.name == batch)
    with registry.reading() as session:
        return [(serial, cert) for serial, cert in session.execute(query.order_by(Device.id))]


ROWS_PER_FETCH = 500


def _batch_id(session: Session, name: str) -> int:
    """The id of batch ``name``, or NotFoundError."""
    found = session.scalar(select(Batch.id).where(Batch.name == name))
    if found is None:
        raise NotFoundError(f"no batch named {name!r}", slug="batch-not-found")
    return int(found)


def device_certificates(
    registry: Registry, batch: str | None, states: Iterable[str]
) -> Iterator[tuple[Device, Certificate]]:
    """(device, unrevoked certificate) of devices in ``states``, in device then issuing order.

    Streamed a few hundred rows at a time, so an export of any size stays small;
    the read session stays open while the caller iterates.
    """
    query = (
        select(Device, Certificate)
        .join(Certificate, Certificate.device_id == Device.id)
        .where(Device.state.in_(list(states)), Certificate.revoked_at.is_(None))
    )
    with registry.reading() as session:
        if batch is not None:
            query = query.where(Device.batch_id == _batch_id(session, batch))
        query = query.order_by(Device.id, Certificate.id)
        rows = session.execute(query.execution_options(yield_per=ROWS_PER_FETCH))
        yield from ((device, cert) for device, cert in rows)


def devices_with_identity(
    registry: Registry, batch: str | None
) -> Iterator[tuple[Device, Certificate | None]]:
    """(device, its first certificate or None) for every device of a batch or all, by id.

    Every state, revoked certificates too: an export must name what it leaves
    out and why, not silently filter it. Streamed like ``device_certificates``.
    """
    first = (
        select(Certificate.device_id, func.min(Certificate.id).label("first_id"))
        .group_by(Certificate.device_id)
        .subquery()
    )
    query = (
        select(Device, Certificate)
        .outerjoin(first, first.c.device_id == Device.id)
        .outerjoin(Certificate, Certificate.id == first.c.first_id)
    )
    with registry.reading() as session:
        if batch is not None:
            query = query.where(Device.batch_id == _batch_id(session, batch))
        rows = session.execute(
            query.order_by(Device.id).execution_options(yield_per=ROWS_PER_FETCH)
        )
        yield from ((device, cert) for device, cert in rows)


@dataclass(frozen=True)
class BatchSummary:
    """A batch, its devices per state and when its newest device was provisioned."""

    batch: Batch
    devices: Mapping[str, int]
    last_provisioned: datetime.datetime | None

    @property
    def rate(self) -> float | None:
        """Devices provisioned per second, from the batch's creation to its newest device.

        Times are whole seconds, so a batch done within its first second counts
        one second; None before the first device is provisioned.
        """
        if self.last_provisioned is None:
            return None
        seconds = (self.last_provisioned - self.batch.created_at).total_seconds()
        return self.devices.get("provisioned", 0) / max(seconds, 1.0)


def _per_state(session: Session, batch_id: int | None = None) -> Sequence[tuple[int, str, int]]:
    """(batch id, state, devices) for one batch or every batch, from the counters (0012)."""
    total = func.sum(DeviceCount.n)
    query = select(DeviceCount.batch_id, DeviceCount.state, total).group_by(
        DeviceCount.batch_id, DeviceCount.state
    )
    where = DeviceCount.batch_id != 0 if batch_id is None else DeviceCount.batch_id == batch_id
    rows = session.execute(query.where(where).having(total != 0))
    return [(int(b), str(state), int(n)) for b, state, n in rows]


def _newest(session: Session, batch_ids: Sequence[int]) -> dict[int, datetime.datetime]:
    """Each batch's newest provisioning time: two index seeks per batch, whatever its size.

    Only provisioned and revoked devices have one; with the batch and state
    fixed, the newest is the last entry of ``ix_devices_batch_state`` (read
    backwards, one row: an ``ORDER BY ... LIMIT 1`` both engines answer by a seek).
    """

    def newest(state: DeviceState) -> Any:
        at = Device.provisioned_at
        return (
            select(at)
            .where(Device.batch_id == Batch.id, Device.state == state, at.is_not(None))
            .order_by(at.desc())
            .limit(1)
            .scalar_subquery()
        )

    query = select(Batch.id, newest(DeviceState.PROVISIONED), newest(DeviceState.REVOKED))
    found: dict[int, datetime.datetime] = {}
    for batch_id, *times in session.execute(query.where(Batch.id.in_(list(batch_ids)))):
        known = [as_utc(t) for t in times if t is not None]
        if known:
            found[int(batch_id)] = max(known)
    return found


def _summaries(session: Session, batches: Sequence[Batch], one: int | None) -> list[BatchSummary]:
    states: dict[int, dict[str, int]] = {}
    for batch_id, state, count in _per_state(session, one):
        states.setdefault(batch_id, {})[state] = count
    newest = _newest(session, [b.id for b in batches])
    return [BatchSummary(b, states.get(b.id, {}), newest.get(b.id)) for b in batches]


def state_counts(session: Session, batch_id: int) -> dict[str, int]:
    """How many of a batch's devices are in each state (inside the caller's session)."""
    return {state: count for _, state, count in _per_state(session, batch_id)}


def batches(registry: Registry) -> Sequence[BatchSummary]:
    """Every batch, oldest first, with its devices per state: three queries in all."""
    with registry.reading() as session:
        found = session.scalars(select(Batch).order_by(Batch.id)).all()
        return _summaries(session, found, None)


def batch_summary(registry: Registry, name: str) -> BatchSummary:
    """One batch as ``batches`` lists it, or NotFoundError."""
    with registry.reading() as session:
        batch = session.scalars(select(Batch).where(Batch.name == name)).one_or_none()
        if batch is None:
            raise NotFoundError(f"no batch named {name!r}", slug="batch-not-found")
        (summary,) = _summaries(session, [batch], batch.id)
        return summary


def authorities(registry: Registry) -> Mapping[str, CaRecord]:
    """The workspace's CAs by name, oldest first: certificates, key URIs, kinds, retirement."""
    with registry.reading() as session:
        return {row.name: row for row in session.scalars(select(CaRecord).order_by(CaRecord.id))}


@dataclass(frozen=True)
class RootUpdate:
    """The newest root key update (RFC 4210 section 4.4), as CMP's rootCaKeyUpdate carries it.

    ``new_with_new`` is the new root's self-signed certificate; ``new_with_old``
    certifies the new root's key with the old root's (devices that trust only
    the old root reach the new one through it); ``old_with_new`` certifies the
    old root's key with the new one (the reverse, for devices given the new root).
    """

    new_with_new: x509.Certificate
    new_with_old: x509.Certificate
    old_with_new: x509.Certificate


def link_label(subject: str, signer: str) -> str:
    """The key label of the link certificate of CA ``subject``'s key signed by ``signer``."""
    return f"{subject}-with-{signer}"


def root_update(registry: Registry) -> RootUpdate | None:
    """The link certificates of the newest root rollover, or None if the root never rolled."""
    with registry.reading() as session:
        roots = session.scalars(
            select(CaRecord)
            .where(CaRecord.kind == CaKind.ROOT)
            .order_by(CaRecord.id.desc())
            .limit(2)
        ).all()
        if len(roots) < 2:
            return None
        new, old = roots
        labels = {link_label(new.name, old.name), link_label(old.name, new.name)}
        rows = session.execute(
            select(Certificate.key_label, Certificate.der).where(
                Certificate.profile == Profile.ROOT_LINK, Certificate.key_label.in_(labels)
            )
        )
        links = {label: der for label, der in rows}
    return RootUpdate(
        x509.load_der_x509_certificate(new.certificate),
        x509.load_der_x509_certificate(links[link_label(new.name, old.name)]),
        x509.load_der_x509_certificate(links[link_label(old.name, new.name)]),
    )


def settings(registry: Registry) -> Mapping[str, str]:
    """The workspace settings (``name -> value``) every station shares."""
    with registry.lookup() as connection:
        return {str(n): str(v) for n, v in connection.execute(select(Setting.name, Setting.value))}


@dataclass(frozen=True)
class Status:
    """What an OCSP answer needs of one certificate: its DER and its revocation."""

    der: bytes
    revoked_at: datetime.datetime | None
    reason: str | None


_STATUS = select(Certificate.der, Certificate.revoked_at, Certificate.revocation_reason)
_REVOCATIONS = select(func.count(), func.max(Certificate.revoked_at)).where(
    Certificate.revoked_at.is_not(None)
)


def status(registry: Registry, serial_number: str) -> Status | None:
    """The recorded certificate ``serial_number`` (lowercase hex) for an OCSP answer.

    One Core statement on a lookup connection: OCSP asks this for every
    certificate not yet in its cache, so no ORM objects or transaction.
    """
    with registry.lookup() as connection:
        row = connection.execute(
            _STATUS.where(Certificate.serial_number == serial_number)
        ).one_or_none()
    if row is None:
        return None
    when = None if row[1] is None else as_utc(row[1])
    return Status(bytes(row[0]), when, row[2])


def revocations(registry: Registry) -> tuple[int, datetime.datetime | None]:
    """(how many certificates are revoked, the newest revocation time).

    Revocations are final, so this pair changes with every revocation and
    only then: a cheap marker for caches of certificate status.
    """
    with registry.lookup() as connection:
        count, newest = connection.execute(_REVOCATIONS).one()
    return int(count), None if newest is None else as_utc(newest)


def tokens(registry: Registry) -> Sequence[ApiToken]:
    """Every API token (digests only), oldest first."""
    with registry.reading() as session:
        return session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.name)).all()


def ping(registry: Registry) -> None:
    """Check the database answers; RegistryError if it does not."""
    try:
        with registry.reading() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        raise RegistryError("the registry database does not answer") from None


@dataclass(frozen=True)
class Holder:
    """The device that holds a unique id: its row id and serial."""

    device_id: int
    serial: str


def unique_id_holders(registry: Registry, unique_ids: Iterable[str]) -> Mapping[str, Holder]:
    """Which devices already hold any of ``unique_ids``, in one query.

    A batch asks this per chunk before it issues: a device identity the
    registry already holds must fail that device with its reason, not roll back
    a chunk on the unique index after its certificates were signed.
    """
    wanted = sorted(set(unique_ids))
    if not wanted:
        return {}
    with registry.reading() as session:
        rows = session.execute(
            select(Device.unique_id, Device.id, Device.serial).where(Device.unique_id.in_(wanted))
        ).all()
    return {str(unique_id): Holder(int(id_), serial) for unique_id, id_, serial in rows}


def releases(registry: Registry, product: str | None = None) -> Sequence[Release]:
    """Recorded firmware releases (of one product, or all), oldest first."""
    query = select(Release).order_by(Release.id)
    if product is not None:
        query = query.where(Release.product == product)
    with registry.reading() as session:
        return session.scalars(query).all()


def attestation_policy(registry: Registry, product: str) -> AttestationPolicy:
    """A product's stored attestation policy, or NotFoundError."""
    with registry.reading() as session:
        found = session.get(AttestationPolicy, product)
    if found is None:
        raise NotFoundError(
            f"no attestation policy for product {product!r}", slug="attestation-policy-not-found"
        )
    return found


@dataclass(frozen=True)
class AttestationHistory:
    """A device's attestation state and its newest results, newest first."""

    device: Device
    results: Sequence[AttestationResult]


def attestation_history(registry: Registry, serial: str, limit: int = 100) -> AttestationHistory:
    """The newest ``limit`` attestation results of a device (one index seek), or NotFoundError."""
    with registry.reading() as session:
        device = session.scalars(select(Device).where(Device.serial == serial)).one_or_none()
        if device is None:
            raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
        results = session.scalars(
            select(AttestationResult)
            .where(AttestationResult.device_id == device.id)
            .order_by(AttestationResult.id.desc())
            .limit(limit)
        ).all()
        return AttestationHistory(device, results)


def attestation_counts(registry: Registry, stale_after: datetime.timedelta) -> dict[str, int]:
    """Devices per attestation state now; ``trusted`` ones attested before the cutoff are stale.

    Totals come from the counters (migration 0012). Stale is the sum of the
    ``trusted`` minutes before the cutoff's minute plus the devices attested
    within that minute before the cutoff, a range of ``ix_devices_attestation``:
    nothing is rewritten as results age, and no scan grows with the fleet.
    """
    cutoff = utc_now() - stale_after
    minute = _minute(cutoff)
    with registry.reading() as session:
        rows = session.execute(
            select(DeviceCount.attestation, func.sum(DeviceCount.n)).group_by(
                DeviceCount.attestation
            )
        ).all()
        older = session.scalar(
            select(func.sum(DeviceTimeline.n)).where(
                DeviceTimeline.kind == AttestationState.TRUSTED, DeviceTimeline.minute < minute
            )
        )
        within = session.scalar(
            select(func.count()).where(
                Device.attestation == AttestationState.TRUSTED,
                Device.attested_at >= _start(minute),
                Device.attested_at < cutoff,
            )
        )
    counts = {state.value: 0 for state in AttestationState}
    counts.update({str(state): int(n) for state, n in rows})
    counts[AttestationState.STALE] = int(older or 0) + int(within or 0)
    counts[AttestationState.TRUSTED] -= counts[AttestationState.STALE]
    return counts


def product_batches(registry: Registry, product: str, names: Sequence[str] = ()) -> Sequence[Batch]:
    """The batches of ``product`` (only ``names`` if given), oldest first.

    A named batch that does not exist or belongs to another product is a
    NotFoundError: a report scoped to it must not silently cover less.
    """
    query = select(Batch).where(Batch.product == product).order_by(Batch.id)
    if names:
        query = query.where(Batch.name.in_(list(names)))
    with registry.reading() as session:
        found = session.scalars(query).all()
    missing = sorted(set(names) - {batch.name for batch in found})
    if missing:
        raise NotFoundError(
            f"no batch named {missing[0]!r} for product {product!r}", slug="batch-not-found"
        )
    return found


@dataclass(frozen=True)
class FleetFigures:
    """What an evidence pack counts over a set of batches (every mapping: name -> count)."""

    states: Mapping[str, int]  # devices per DeviceState
    failures: Mapping[str, int]  # failed devices per reason
    attestation: Mapping[str, int]  # devices per newest attestation verdict
    results: Mapping[str, int]  # attestation results per verdict
    result_reasons: Mapping[str, int]  # failed results per reason (JSON list, as recorded)
    certificates: Mapping[str, int]  # device certificates per profile
    revocations: Mapping[str, int]  # revoked device certificates per RFC 5280 reason


def _count_by(session: Session, query: Select[Any, int]) -> dict[str, int]:
    return {str(key): int(count) for key, count in session.execute(query)}


def _reasons(session: Session, query: Select[str, int]) -> dict[str, int]:
    """Failed results per single reason: each result stores its reasons as a JSON list."""
    counts: dict[str, int] = {}
    for reasons, count in session.execute(query):
        for reason in json.loads(reasons):
            counts[str(reason)] = counts.get(str(reason), 0) + int(count)
    return counts


def fleet_figures(registry: Registry, batch_ids: Sequence[int]) -> FleetFigures:
    """The ``FleetFigures`` of the devices of ``batch_ids``: grouped counts, nothing streamed."""
    in_scope = Device.batch_id.in_(list(batch_ids))
    count = func.count()

    def of_devices(column: Any, *where: ColumnElement[bool]) -> Select[Any, int]:
        return select(column, count).where(in_scope, *where).group_by(column)

    def joined(model: Any, column: Any, *where: ColumnElement[bool]) -> Select[Any, int]:
        return (
            select(column, count)
            .join(Device, model.device_id == Device.id)
            .where(in_scope, *where)
            .group_by(column)
        )

    failed = AttestationResult.verdict == AttestationState.FAILED
    revoked = Certificate.revoked_at.is_not(None)
    with registry.reading() as session:
        return FleetFigures(
            states=_count_by(session, of_devices(Device.state)),
            failures=_count_by(session, of_devices(Device.failure, Device.failure.is_not(None))),
            attestation=_count_by(session, of_devices(Device.attestation)),
            results=_count_by(session, joined(AttestationResult, AttestationResult.verdict)),
            result_reasons=_reasons(
                session, joined(AttestationResult, AttestationResult.reasons, failed)
            ),
            certificates=_count_by(session, joined(Certificate, Certificate.profile)),
            revocations=_count_by(
                session, joined(Certificate, Certificate.revocation_reason, revoked)
            ),
        )


def checkpoint_events(registry: Registry, limit: int = 20) -> tuple[int, Sequence[AuditEvent]]:
    """(how many signed checkpoints the log holds, the newest ``limit`` of them, newest first)."""
    kind = AuditEvent.kind == "audit.checkpoint"
    with registry.reading() as session:
        total = session.scalar(select(func.count()).where(kind)) or 0
        newest = session.scalars(
            select(AuditEvent).where(kind).order_by(AuditEvent.seq.desc()).limit(limit)
        ).all()
    return int(total), newest


def newest_per_profile(registry: Registry, batch_ids: Sequence[int]) -> Sequence[Certificate]:
    """The newest certificate of each profile the devices of ``batch_ids`` hold (what to lint)."""
    newest = (
        select(func.max(Certificate.id))
        .join(Device, Certificate.device_id == Device.id)
        .where(Device.batch_id.in_(list(batch_ids)))
        .group_by(Certificate.profile)
    )
    with registry.reading() as session:
        return session.scalars(
            select(Certificate).where(Certificate.id.in_(newest)).order_by(Certificate.profile)
        ).all()


# --- the dashboard's reads: keyset pages and counts from indexes (migration 0011) ---


def dashboard_session(registry: Registry, digest: str) -> DashboardSession | None:
    """The dashboard session whose secret has this SHA-256 digest (a primary-key lookup)."""
    with registry.reading() as session:
        return session.get(DashboardSession, digest)


def token_valid(registry: Registry, token_id: str) -> bool:
    """Whether the token still counts: recorded, unrevoked and unexpired."""
    with registry.lookup() as connection:
        row = connection.execute(
            select(ApiToken.revoked_at, ApiToken.expires_at).where(ApiToken.id == token_id)
        ).one_or_none()
    if row is None or row.revoked_at is not None:
        return False
    return row.expires_at is None or as_utc(row.expires_at) > utc_now()


@dataclass(frozen=True)
class Fleet:
    """Devices by state, by product (and state), and in all: from one index scan."""

    by_state: Mapping[str, int]
    by_product: Mapping[str, Mapping[str, int]]
    total: int


NO_PRODUCT = "(no batch)"
"""The product column for devices that came without a batch (imported manifests)."""


def fleet(registry: Registry) -> Fleet:
    """The fleet's counts: the device counters (migration 0012) summed, and the batches."""
    total = func.sum(DeviceCount.n)
    with registry.reading() as session:
        products = dict(session.execute(select(Batch.id, Batch.product)).all())
        rows = session.execute(
            select(DeviceCount.batch_id, DeviceCount.state, total)
            .group_by(DeviceCount.batch_id, DeviceCount.state)
            .having(total != 0)
        ).all()
    by_state: dict[str, int] = {}
    by_product: dict[str, dict[str, int]] = {}
    for batch_id, state, count in rows:
        product = products.get(batch_id, NO_PRODUCT)  # batch 0: devices without a batch
        by_state[state] = by_state.get(state, 0) + int(count)
        per = by_product.setdefault(product, {})
        per[state] = per.get(state, 0) + int(count)
    return Fleet(by_state, by_product, sum(by_state.values()))


PERIODS = {"minute": 16, "hour": 13, "day": 10}
"""The periods a throughput chart counts by, and the length of their prefix of a minute."""


def _minute(moment: datetime.datetime) -> str:
    """The counters' key for the UTC minute ``moment`` falls in (``YYYY-MM-DD HH:MM``)."""
    return as_utc(moment).strftime("%Y-%m-%d %H:%M")


def _start(text_: str) -> datetime.datetime:
    padded = (text_ + "0000-01-01 00:00"[len(text_) :])[:16].replace("T", " ")
    return datetime.datetime.strptime(padded, "%Y-%m-%d %H:%M").replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Throughput:
    """Devices provisioned per period: (period start, count), oldest first, gaps left out."""

    period: str
    points: Sequence[tuple[datetime.datetime, int]]


def throughput(
    registry: Registry,
    *,
    batch: str | None = None,
    since: datetime.datetime,
    period: str,
) -> Throughput:
    """Provisioned devices per ``period`` (minute, hour, day) from the minute of ``since``.

    Sums of the per-minute counters (migration 0012): a range of their primary
    key (one batch) or of ``ix_device_timeline_minute``; each period is a
    prefix of the minute, so no date is parsed per row on either engine.
    """
    bucket = func.substr(DeviceTimeline.minute, 1, PERIODS[period]).label("bucket")
    total = func.sum(DeviceTimeline.n)
    query = (
        select(bucket, total)
        .where(DeviceTimeline.kind == "provisioned", DeviceTimeline.minute >= _minute(since))
        .group_by(bucket)
        .having(total != 0)
        .order_by(bucket)
    )
    with registry.reading() as session:
        if batch is not None:
            query = query.where(DeviceTimeline.batch_id == _batch_id(session, batch))
        rows = session.execute(query).all()
    return Throughput(period, [(_start(str(b)), int(n)) for b, n in rows])


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One keyset page: its rows and the key to ask for the next one (None at the end)."""

    items: Sequence[T]
    next: int | None


def device_page(
    registry: Registry,
    *,
    batch: str | None = None,
    state: str | None = None,
    product: str | None = None,
    serial: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> Page[DeviceRow]:
    """Devices by id after ``after``, filtered by batch, state, product and serial prefix.

    Keyset pagination: every page is one range of an index ending in ``id``
    (the primary key, the (batch, id), (state, id), (batch, state, id)
    indexes of migration 0013, or (product, id) of 0014), so the last page of
    ten million costs what the first does; an offset would read every row
    before the page. ``next`` is the last id shown when more follow
    (``registry.cursors`` makes it opaque).
    """
    query = _device_query(None, state)
    order: tuple[QueryableAttribute[Any], ...] = (Device.id,)
    if product is None:
        query = query.where(Device.id > after)
    else:
        # Not "product = P AND id > after": PostgreSQL's planner takes products as spread
        # evenly and walks the primary key, but they come in batch-sized blocks, so it
        # would skip whole batches of other products. This form only (product, id) serves.
        query = query.where(
            tuple_(Device.product, Device.id) > tuple_(literal(product), literal(after)),
            Device.product <= product,
        )
        order = (Device.product, Device.id)
    if serial:
        query = query.where(Device.serial >= serial, Device.serial < serial + "\uffff")
    with registry.reading() as session:
        if batch is not None:
            query = query.where(Device.batch_id == _batch_id(session, batch))
        rows = session.execute(query.order_by(*order).limit(limit + 1)).all()
    items = [DeviceRow(device, name) for device, name in rows[:limit]]
    return Page(items, items[-1].device.id if len(rows) > limit else None)


@dataclass(frozen=True)
class DeviceListing:
    """One page of ``keyfab devices list`` / ``GET /api/v1/devices`` and where the next starts."""

    items: Sequence[DeviceRow]
    next_cursor: str | None


def device_listing(
    registry: Registry,
    *,
    batch: str | None = None,
    state: str | None = None,
    product: str | None = None,
    cursor: str | None = None,
    after_serial: str | None = None,
    limit: int = 50,
) -> DeviceListing:
    """The device listing of the CLI and the API: a keyset page after an opaque cursor
    (or after a device named by serial), filtered, with the cursor of the next page.

    The cursor is bound to the filters (``registry.cursors``): reusing it under
    others is refused rather than answered from a meaningless place.
    """
    scope = {"batch": batch, "state": state, "product": product}
    if cursor is not None and after_serial is not None:
        raise InvalidRequestError("give a cursor or a serial to start after, not both")
    after = 0
    if cursor is not None:
        after = cursors.decode(cursor, scope)
    elif after_serial is not None:
        after = device_position(registry, after_serial)
    page = device_page(
        registry, batch=batch, state=state, product=product, after=after, limit=limit
    )
    following = None if page.next is None else cursors.encode(page.next, scope)
    return DeviceListing(page.items, following)


def audit_events(
    registry: Registry,
    *,
    kind: str | None = None,
    subjects: Sequence[str] = (),
    before: int | None = None,
    limit: int = 50,
) -> Page[AuditEvent]:
    """Audit events newest first, of one kind and/or about some subjects, before ``before``.

    Keyset pagination over ``seq``; a kind or subject filter walks
    ``ix_audit_events_kind`` or ``ix_audit_events_subject``.
    """
    query = select(AuditEvent)
    if kind:
        query = query.where(AuditEvent.kind == kind)
    if subjects:
        query = query.where(AuditEvent.subject.in_(list(subjects)))
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    with registry.reading() as session:
        rows = session.scalars(query.order_by(AuditEvent.seq.desc()).limit(limit + 1)).all()
    items = rows[:limit]
    return Page(items, items[-1].seq if len(rows) > limit else None)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint event and the hash the chain holds at the event it covers (None if gone)."""

    event: AuditEvent
    covered_seq: int | None
    covered_hash: str | None


def audit_head(registry: Registry) -> tuple[int, str] | None:
    """The chain's newest link (seq, hash), None for an empty log."""
    with registry.reading() as session:
        row = session.execute(select(AuditHead.seq, AuditHead.hash)).one_or_none()
    return None if row is None else (int(row[0]), str(row[1]))


def recent_checkpoints(
    registry: Registry, kind: str, *, before: int | None = None, limit: int = 20
) -> Page[Checkpoint]:
    """Checkpoint events newest first, each with the stored hash of the event it covers."""
    page = audit_events(registry, kind=kind, before=before, limit=limit)
    covered = {e.seq: _covered_seq(e) for e in page.items}
    wanted = [seq for seq in covered.values() if seq is not None]
    with registry.reading() as session:
        hashes = dict(
            session.execute(
                select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq.in_(wanted))
            )
            .tuples()
            .all()
        )
    items = [Checkpoint(e, covered[e.seq], hashes.get(covered[e.seq] or -1)) for e in page.items]
    return Page(items, page.next)


def _covered_seq(event: AuditEvent) -> int | None:
    try:
        seq = json.loads(event.data).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) else None
