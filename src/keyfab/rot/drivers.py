"""The one table of root-of-trust drivers; everything that names a driver reads it.

Recipes (``[rot] driver``), key URI schemes, ``keyfab provision --backend`` and
the code that opens a device all derive their list from :data:`DRIVERS`, so a
driver is offered exactly when it exists. Importing this module imports no
hardware library: each driver's module is imported when a root of trust is
first opened, and a missing optional library then names the extra to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

from keyfab.errors import ConfigError, MissingExtraError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from keyfab.rot.base import RootOfTrust
    from keyfab.rot.options import DriverOptions
    from keyfab.rot.uri import KeyUri

__all__ = [
    "DRIVERS",
    "Driver",
    "check_options",
    "choices",
    "driver",
    "driver_names",
    "open_device",
    "open_uri",
]


@dataclass(frozen=True)
class Driver:
    """One root-of-trust driver.

    ``module`` provides ``open_uri(KeyUri)`` and ``open_device(options, slot)``;
    ``options`` names the schema of its ``[rot]`` options in ``keyfab.rot.options``;
    ``extra`` is the optional part of keyfab its library comes with (None: always
    installed).
    """

    name: str
    module: str
    options: str
    extra: str | None
    summary: str

    @property
    def options_model(self) -> type[DriverOptions]:
        """The options schema, imported when first needed: opening a key by its URI
        (``keyfab fit sign --key soft:…``) must not pay for pydantic."""
        from keyfab.rot import options

        model: type[DriverOptions] = getattr(options, self.options)
        return model


DRIVERS: Mapping[str, Driver] = MappingProxyType(
    {
        d.name: d
        for d in (
            Driver(
                "soft", "keyfab.rot.soft", "SoftOptions", None, "keys in files, for development"
            ),
            Driver(
                "pkcs11", "keyfab.rot.pkcs11", "Pkcs11Options", "pkcs11", "HSMs, secure elements"
            ),
            Driver("tpm2", "keyfab.rot.tpm2", "Tpm2Options", "tpm2", "TPM 2.0 with IDevID/IAK"),
            Driver("puf", "keyfab.rot.puf", "PufOptions", "puf", "SRAM PUF: keys never stored"),
        )
    }
)


def driver_names() -> tuple[str, ...]:
    """The names of the drivers that exist, in the table's order."""
    return tuple(DRIVERS)


def choices() -> str:
    """The driver names as a sentence ("soft, pkcs11 or tpm2"), for messages and help."""
    *first, last = driver_names()
    return f"{', '.join(first)} or {last}" if first else last


def driver(name: str) -> Driver:
    """The driver called ``name``; ConfigError listing the real ones if there is none."""
    found = DRIVERS.get(name)
    if found is None:
        raise ConfigError(f"unknown root-of-trust driver {name!r}: choose {choices()}")
    return found


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Check a recipe's ``[rot]`` options against the driver's schema.

    Raises ConfigError naming the first bad option, so a recipe that cannot open
    a single device is refused before a batch reserves anything. Values are not
    echoed: an inline PIN must not end up in a message.
    """
    from pydantic import ValidationError

    schema = driver(name).options_model
    try:
        schema.model_validate(dict(options))
    except ValidationError as error:
        raise ConfigError(_describe(name, schema, _first(error.errors()))) from None


def _first(errors: list[ErrorDetails]) -> ErrorDetails:
    """An unknown option first: a misspelt name also shows up as a missing one."""
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _describe(name: str, schema: type[DriverOptions], first: ErrorDetails) -> str:
    """One line for pydantic's first complaint, in the words of a recipe's author."""
    option = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return (
            f"{name} driver: unknown [rot] option {option!r} "
            f"(it takes {', '.join(schema.model_fields)})"
        )
    if first["type"] == "missing":
        return f"{name} driver: [rot] needs {option} ="
    message = first["msg"].removeprefix("Value error, ")
    return f"{name} driver: [rot] {option + ': ' if option else ''}{message}"


def _module(name: str) -> ModuleType:
    """Import a driver's module; a missing optional library names its extra."""
    entry = driver(name)
    try:
        return importlib.import_module(entry.module)
    except ImportError as error:
        if entry.extra is None or (error.name or "").startswith("keyfab"):
            raise
        raise MissingExtraError(f"the {name} driver", entry.extra) from None


def open_uri(uri: KeyUri) -> RootOfTrust:
    """The root of trust a parsed key URI points into, by its scheme's driver."""
    rot: RootOfTrust = _module(uri.scheme).open_uri(uri)
    return rot


def open_device(name: str, options: Mapping[str, Any], slot: int) -> RootOfTrust:
    """Device ``slot``'s root of trust; ``options`` already have their placeholders filled."""
    rot: RootOfTrust = _module(name).open_device(options, slot)
    return rot
