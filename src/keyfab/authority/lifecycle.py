"""A product's operational-certificate policy: lifetime, renewal window, key reuse.

The recipe's ``[ldevid]`` table says it (docs/recipes.md). Every batch keeps
the recipe it was made with, so whichever protocol enrols or renews a device
(EST, CMP) reads the policy of that device's batch here, in the enrolment's
transaction. A device keyfab did not make in a batch (enrolled over EST with
a token) gets the defaults: 90 days, renewal from 30 days before expiry, a
new key every time.
"""

from __future__ import annotations

import datetime
import functools
import tomllib

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyfab.errors import PermissionDeniedError
from keyfab.registry import Batch, Certificate, Device


class LdevidPolicy(BaseModel):
    """``[ldevid]``: how long operational certificates last and when they may be renewed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    validity_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="lifetime of an operational certificate (LDevID), days",
    )
    renewal_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="re-enrolment (EST simplereenroll, CMP kur) opens this many days before "
        "the current operational certificate expires; at most validity_days",
    )
    reuse_key: bool = Field(
        default=False,
        description="let a renewal keep the current key (by default every renewal needs a new one)",
    )

    @model_validator(mode="after")
    def _window_inside_lifetime(self) -> LdevidPolicy:
        if self.renewal_days > self.validity_days:
            raise ValueError("renewal_days cannot be longer than validity_days")
        return self

    @property
    def validity(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.validity_days)

    @property
    def renewal_window(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.renewal_days)

    def check_renewal_due(self, current: Certificate, now: datetime.datetime) -> None:
        """Refuse a renewal before the window opens: a device renewing in a loop, or a
        stolen LDevID minting successors, gets one clear refusal instead of certificates."""
        opens = current.not_after - self.renewal_window
        if now < opens:
            raise PermissionDeniedError(
                f"certificate {current.serial_number} is not due for renewal: it expires "
                f"{current.not_after:%Y-%m-%d}, renewal opens {opens:%Y-%m-%d %H:%M}Z "
                f"({self.renewal_days} days before)",
                slug="renewal-not-due",
            )


DEFAULT_POLICY = LdevidPolicy()


def policy_of(session: Session, device_id: int) -> LdevidPolicy:
    """The ``[ldevid]`` policy of the batch that made the device (defaults without one)."""
    recipe = session.scalar(
        select(Batch.recipe).join(Device, Device.batch_id == Batch.id).where(Device.id == device_id)
    )
    return DEFAULT_POLICY if recipe is None else _from_recipe(recipe)


@functools.lru_cache(maxsize=64)
def _from_recipe(recipe: str) -> LdevidPolicy:
    """A batch's recipe was validated when the batch was made, and never changes."""
    table = tomllib.loads(recipe).get("ldevid")
    return DEFAULT_POLICY if table is None else LdevidPolicy.model_validate(table)
