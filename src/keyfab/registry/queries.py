"""Every read the CLI and the service make of the registry, in one place.

Each function opens its own read-only session (``Registry.reading``: on SQLite it
leaves the write lock to the stations) and returns rows that stay usable after
the session closes, so callers above the registry never hold a session or
import SQLAlchemy. A missing thing is a ``NotFoundError`` whose slug the
service turns into a stable problem type.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import Row, Select, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, aliased

from keyfab.clock import as_utc, utc_now
from keyfab.errors import NotFoundError, RegistryError
from keyfab.pki.profiles import Profile
from keyfab.registry.db import Registry
from keyfab.registry.models import (
    ApiToken,
    AttestationPolicy,
    AttestationResult,
    AttestationState,
    Batch,
    CaKind,
    CaRecord,
    Certificate,
    Device,
    Release,
    Setting,
)


@dataclass(frozen=True)
class DeviceRow:
    device: Device
    batch: str | None


@dataclass(frozen=True)
class DevicePage:
    """One page of a device listing and how many devices match in all."""

    items: Sequence[DeviceRow]
    total: int


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


def devices(
    registry: Registry,
    *,
    batch: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> DevicePage:
    """Devices with their batch names, oldest first, filtered, one page at a time."""
    query = _device_query(batch, state)
    with registry.reading() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.execute(query.order_by(Device.id).limit(limit).offset(offset)).all()
        return DevicePage([DeviceRow(device, name) for device, name in rows], int(total))


def device(registry: Registry, serial: str) -> DeviceRecord:
    """One device with its batch and certificates, or NotFoundError."""
    with registry.reading() as session:
        row = session.execute(
            _device_query(None, None).where(Device.serial == serial)
        ).one_or_none()
        if row is None:
            raise NotFoundError(f"no device with serial {serial!r}", slug="device-not-found")
        return DeviceRecord(row[0], row[1], certificates_of(session, row[0].id))


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


_StateRow = Row[int | None, str, int, datetime.datetime | None]


def _per_state(session: Session, batch_id: int | None = None) -> Sequence[_StateRow]:
    """(batch id, state, devices, newest provisioned_at) for one batch or every batch."""
    query = select(
        Device.batch_id, Device.state, func.count(), func.max(Device.provisioned_at)
    ).group_by(Device.batch_id, Device.state)
    where = Device.batch_id.is_not(None) if batch_id is None else Device.batch_id == batch_id
    return session.execute(query.where(where)).all()


def _summaries(batches: Sequence[Batch], rows: Sequence[_StateRow]) -> list[BatchSummary]:
    states: dict[int, dict[str, int]] = {}
    newest: dict[int, datetime.datetime] = {}
    for batch_id, state, count, last in rows:
        assert batch_id is not None  # _per_state leaves devices without a batch out
        states.setdefault(batch_id, {})[str(state)] = int(count)
        if last is not None:
            newest[batch_id] = max(last, newest.get(batch_id, last))
    return [BatchSummary(b, states.get(b.id, {}), newest.get(b.id)) for b in batches]


def state_counts(session: Session, batch_id: int) -> dict[str, int]:
    """How many of a batch's devices are in each state (inside the caller's session)."""
    return {str(state): int(count) for _, state, count, _ in _per_state(session, batch_id)}


def batches(registry: Registry) -> Sequence[BatchSummary]:
    """Every batch, oldest first, with its devices per state: two queries in all."""
    with registry.reading() as session:
        found = session.scalars(select(Batch).order_by(Batch.id)).all()
        return _summaries(found, _per_state(session))


def batch_summary(registry: Registry, name: str) -> BatchSummary:
    """One batch as ``batches`` lists it, or NotFoundError."""
    with registry.reading() as session:
        batch = session.scalars(select(Batch).where(Batch.name == name)).one_or_none()
        if batch is None:
            raise NotFoundError(f"no batch named {name!r}", slug="batch-not-found")
        (summary,) = _summaries([batch], _per_state(session, batch.id))
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

    Both counts are scans of ``ix_devices_attestation`` (state, attested_at):
    stale is a range in it, so nothing is rewritten as results age.
    """
    cutoff = utc_now() - stale_after
    with registry.reading() as session:
        rows = session.execute(
            select(Device.attestation, func.count()).group_by(Device.attestation)
        ).all()
        stale = session.scalar(
            select(func.count()).where(
                Device.attestation == AttestationState.TRUSTED, Device.attested_at < cutoff
            )
        )
    counts = {state.value: 0 for state in AttestationState}
    counts.update({str(state): int(n) for state, n in rows})
    counts[AttestationState.STALE] = int(stale or 0)
    counts[AttestationState.TRUSTED] -= counts[AttestationState.STALE]
    return counts
