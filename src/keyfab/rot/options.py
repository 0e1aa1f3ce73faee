"""The ``[rot]`` options each driver takes, as schemas checked when a recipe is read.

A recipe's ``[rot]`` table is ``driver`` plus that driver's own options. The
drivers check the values they use when they open a device (a PIN file must be
readable, a handle in range), but that is after a batch reserved its serials.
These schemas catch the mistakes a recipe can show on its own, an unknown
option (a soft recipe's ``path`` under ``--backend pkcs11``), a wrong type or a
missing required option, before anything is written.

Only pydantic is imported here, never python-pkcs11 or tpm2-pytss: the table of
drivers holds these models, and those libraries are optional extras. String
options may hold ``{slot}``, ``{batch}`` and ``{home}``; they are checked as
strings, since the placeholders are filled per device.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

__all__ = ["DriverOptions", "Pkcs11Options", "SoftOptions", "Tpm2Options"]


class DriverOptions(BaseModel):
    """Base of every driver's options: unknown names are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SoftOptions(DriverOptions):
    """``soft``: ``path`` is the device's directory; without it, keys live in memory."""

    path: StrictStr | None = None


class Pkcs11Options(DriverOptions):
    """``pkcs11``: which module and token, how to log in, whether to initialise it."""

    module: StrictStr | None = None
    token: StrictStr | None = None
    serial: StrictStr | None = None
    pin: StrictStr | None = Field(default=None, repr=False)
    pin_file: StrictStr | None = None
    initialize: StrictBool = False
    so_pin: StrictStr | None = Field(default=None, repr=False)
    so_pin_file: StrictStr | None = None

    @model_validator(mode="after")
    def _finds_a_token(self) -> Pkcs11Options:
        """Without ``token`` or ``serial`` no device's token can be found."""
        if self.token is None and self.serial is None:
            raise ValueError("needs token = or serial = to find each device's token")
        return self


_Handle = StrictInt | StrictStr


class Tpm2Options(DriverOptions):
    """``tpm2``: the TCTI (one, or one per slot) and where labels live in the TPM."""

    tcti: StrictStr | list[StrictStr]
    handles: dict[str, _Handle] = Field(default_factory=dict)
    nv: dict[str, _Handle] = Field(default_factory=dict)
    counters: dict[str, _Handle] = Field(default_factory=dict)
    iak: StrictStr = "iak"
    iak_algorithm: StrictStr = "ec-p256"
    ek: StrictStr | None = None
    ek_roots: StrictStr | list[StrictStr] | None = None
