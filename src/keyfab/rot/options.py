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

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

__all__ = ["DriverOptions", "Pkcs11Options", "PufOptions", "SoftOptions", "Tpm2Options"]


class DriverOptions(BaseModel):
    """Base of every driver's options: unknown names are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SoftOptions(DriverOptions):
    """``soft``: ``path`` is the device's directory; without it, keys live in memory."""

    path: StrictStr | None = Field(
        None,
        description="directory of each device's key and object files; unset: keys in memory only",
        examples=["{home}/devices/{batch}/{slot:06d}"],
    )


class Pkcs11Options(DriverOptions):
    """``pkcs11``: which module and token, how to log in, whether to initialise it."""

    module: StrictStr | None = Field(
        None,
        description="the PKCS#11 module (.so) to load; unset: $KEYFAB_PKCS11_MODULE",
        examples=["/usr/lib/softhsm/libsofthsm2.so"],
    )
    token: StrictStr | None = Field(
        None,
        description="label of each device's token (at most 32 bytes); include {batch} and "
        "{slot} so no two batches reuse a label",
        examples=["{batch}-{slot}"],
    )
    serial: StrictStr | None = Field(
        None, description="token serial number to find each device's token (with or without token)"
    )
    pin: StrictStr | None = Field(
        default=None, repr=False, description="user PIN, inline (prefer pin_file)"
    )
    pin_file: StrictStr | None = Field(
        None, description="file holding the user PIN on one line", examples=["pins/user.pin"]
    )
    initialize: StrictBool = Field(
        False, description="make a missing token on a blank slot (C_InitToken, C_InitPIN)"
    )
    so_pin: StrictStr | None = Field(
        default=None, repr=False, description="security officer PIN for initialize, inline"
    )
    so_pin_file: StrictStr | None = Field(
        None, description="file holding the SO PIN for initialize", examples=["pins/so.pin"]
    )

    @model_validator(mode="after")
    def _finds_a_token(self) -> Pkcs11Options:
        """Without ``token`` or ``serial`` no device's token can be found."""
        if self.token is None and self.serial is None:
            raise ValueError("needs token = or serial = to find each device's token")
        return self


_Handle = StrictInt | StrictStr


class Tpm2Options(DriverOptions):
    """``tpm2``: the TCTI (one, or one per slot) and where labels live in the TPM."""

    tcti: StrictStr | list[StrictStr] = Field(
        description="how to reach the TPM (one TCTI, or a list: one per slot of the station)",
        examples=["device:/dev/tpmrm0"],
    )
    handles: dict[str, _Handle] = Field(
        default_factory=dict, description="persistent handle per key label"
    )
    nv: dict[str, _Handle] = Field(
        default_factory=dict,
        description="NV index per object label; others get a stable derived index",
    )
    counters: dict[str, _Handle] = Field(
        default_factory=dict, description="NV counter index per counter name"
    )
    iak: StrictStr = Field("iak", description="label of the attestation key (IAK)")
    iak_algorithm: StrictStr = Field("ec-p256", description="the IAK's key type")
    ek: StrictStr | None = Field(
        None, description="which EK to use if the TPM has several, e.g. rsa-2048"
    )
    ek_roots: StrictStr | list[StrictStr] | None = Field(
        None, description="TPM vendor roots and intermediates (PEM files or directories)"
    )


_Number = StrictFloat | StrictInt


class PufOptions(DriverOptions):
    """``puf``: where each device keeps its public state, and where its PUF reads come from.

    The model's parameters are checked here; the extractor (and numpy) are not
    imported: a recipe check must not need the ``puf`` extra.
    """

    path: StrictStr | None = Field(
        None,
        description="directory of each device's public state (helper data, key labels, "
        "objects, counters); unset: in memory only",
        examples=["{home}/devices/{batch}/{slot:06d}"],
    )
    source: Literal["model", "files"] = Field(
        "model", description="'model': simulated SRAM; 'files': start-up dumps (docs/puf.md)"
    )
    dumps: StrictStr | None = Field(
        None,
        description="files: directory of the device's start-up dumps, one .bin per power-up",
        examples=["{home}/dumps/{slot:06d}"],
    )
    cells: StrictInt = Field(16384, description="SRAM cells (bits) of the PUF region")
    chip: StrictStr | None = Field(
        None,
        description="model: the simulated chip's name (same name, same silicon); "
        "unset: the device's path, or a new chip each time in memory",
        examples=["{batch}-{slot}"],
    )
    ber: _Number = Field(0.10, gt=0, lt=0.5, description="model: per-read bit error rate")
    bias: _Number = Field(0.5, gt=0, lt=1, description="model: fraction of cells starting as 1")
    temperature: _Number = Field(
        25.0, ge=-55, le=150, description="model: temperature of the reads in °C"
    )
    age: _Number = Field(0.0, ge=0, le=50, description="model: the chip's age in years")

    @field_validator("cells")
    @classmethod
    def _whole_pairs(cls, cells: int) -> int:
        """The extractor's bound, restated: 16 extra lines beat importing numpy here."""
        if not (4176 <= cells <= 1 << 20 and cells % 16 == 0):
            raise ValueError("must be a multiple of 16 from 4176 to 1048576")
        return cells

    @model_validator(mode="after")
    def _files_need_dumps(self) -> PufOptions:
        if self.source == "files" and self.dumps is None:
            raise ValueError('source = "files" needs dumps = (the directory of start-up dumps)')
        return self
