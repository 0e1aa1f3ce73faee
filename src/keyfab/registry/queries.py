"""Read-side queries shared by the CLI and the service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyfab.errors import ConfigError
from keyfab.registry.models import Batch, Certificate, Device


def devices(
    session: Session,
    *,
    batch: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Sequence[tuple[Device, str | None]]:
    """Devices with their batch names, oldest first, filtered and paginated."""
    query = select(Device, Batch.name).outerjoin(Batch, Device.batch_id == Batch.id)
    if batch is not None:
        query = query.where(Batch.name == batch)
    if state is not None:
        query = query.where(Device.state == state)
    return session.execute(query.order_by(Device.id).limit(limit).offset(offset)).all()


def device(session: Session, serial: str) -> Device:
    found = session.scalars(select(Device).where(Device.serial == serial)).one_or_none()
    if found is None:
        raise ConfigError(f"no device with serial {serial!r}")
    return found


def certificates_of(session: Session, device_id: int) -> Sequence[Certificate]:
    return session.scalars(
        select(Certificate).where(Certificate.device_id == device_id).order_by(Certificate.id)
    ).all()


def batch_certificates(session: Session, batch: str | None) -> Sequence[tuple[str, Certificate]]:
    """(device serial, certificate) for every device certificate, of one batch or all."""
    query = select(Device.serial, Certificate).join(Certificate, Certificate.device_id == Device.id)
    if batch is not None:
        query = query.join(Batch, Device.batch_id == Batch.id).where(Batch.name == batch)
    return session.execute(query.order_by(Device.id)).all()
