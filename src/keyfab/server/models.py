"""The JSON shapes of the REST API (what OpenAPI documents and clients get)."""

from __future__ import annotations

import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from keyfab.names import max_length, name_problem, pattern
from keyfab.pki import RevocationReason
from keyfab.registry import CertificateStatus, DeviceState


class Strict(BaseModel):
    """Request bodies refuse unknown fields and never coerce: a typo is an error,
    and ``"5"`` or ``true`` is not a count."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _checked(kind: str) -> AfterValidator:
    """The whole name rule of keyfab.names (the pattern alone cannot refuse '..')."""

    def check(value: str) -> str:
        problem = name_problem(kind, value)
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


BatchName = Annotated[
    str,
    Field(min_length=1, max_length=max_length("batch"), pattern=pattern("batch")),
    _checked("batch"),
]
RecipeName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=max_length("recipe"),
        pattern=pattern("recipe"),
        description="A recipe in the workspace's recipes/ directory, without '.toml'.",
    ),
    _checked("recipe"),
]


class CertificateSummary(BaseModel):
    serial_number: str
    key: str
    profile: str
    subject: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    revoked_at: datetime.datetime | None
    revocation_reason: str | None
    status: CertificateStatus = Field(description="good, revoked or expired, now")


class CertificateInfo(CertificateSummary):
    device: str | None
    issued_at: datetime.datetime
    sha256: str


class DeviceSummary(BaseModel):
    serial: str
    state: DeviceState
    batch: str | None
    slot: int | None
    rot: str | None
    unique_id: str | None
    created_at: datetime.datetime
    provisioned_at: datetime.datetime | None
    failure: str | None = Field(None, description="Why the device failed, if it is failed.")


class DeviceInfo(DeviceSummary):
    certificates: list[CertificateSummary]


class DevicePage(BaseModel):
    """A keyset page: ``next_cursor`` (null on the last page) asks for the next one."""

    items: list[DeviceSummary]
    next_cursor: str | None
    limit: int


class RevokeRequest(Strict):
    reason: str = Field(
        "unspecified",
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z]+$",
        description="An RFC 5280 reason: "
        + ", ".join(reason.value for reason in RevocationReason)
        + ". The CRL entry carries it.",
    )


class RevokeResult(BaseModel):
    serial: str | None = Field(description="The device, if the certificate is a device's.")
    state: DeviceState | None
    reason: str
    changed: bool = Field(description="False if it was already revoked: nothing changed.")
    revoked_certificates: list[str] = Field(description="Certificates revoked by this request.")


class BatchRequest(Strict):
    name: BatchName
    recipe: RecipeName
    count: int = Field(ge=1, le=100_000)


class BatchProgress(BaseModel):
    name: str
    product: str
    count: int
    state: str
    running: bool
    devices: dict[str, int]
    created_at: datetime.datetime
    finished_at: datetime.datetime | None


class BatchSummary(BaseModel):
    name: str
    product: str
    count: int
    state: str
    devices: dict[str, int] = Field(description="Devices per state.")
    created_at: datetime.datetime
    finished_at: datetime.datetime | None
    devices_per_second: float | None = Field(
        description="Provisioned devices per second, from creation to the newest device."
    )


class BatchList(BaseModel):
    items: list[BatchSummary]


class BatchCancellation(BaseModel):
    name: str
    changed: bool = Field(description="False if it was already cancelled: nothing changed.")
    released: int = Field(description="Pending devices now 'cancelled'.")
    issued: int = Field(description="Issued devices left as they are (certificates recorded).")
    stopped: bool = Field(
        False, description="A run of the batch on this service was stopped after its chunk."
    )


class AuditStatus(BaseModel):
    ok: bool
    events: int
    head_hash: str
    broken_at: int | None
    reason: str


class Health(BaseModel):
    status: str
    database: str
