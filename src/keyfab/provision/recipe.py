"""Recipes: what a product gets at the factory, read from TOML and validated.

Unknown keys are errors (a typo must not silently drop a lock or a counter).
The ``[rot]`` table holds ``driver`` and that driver's own options, checked
against the driver's schema from :mod:`keyfab.rot.drivers`, so a recipe no
device could be opened with is refused before a batch reserves serials.
"""

from __future__ import annotations

import re
import string
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from keyfab.authority.lifecycle import DEFAULT_POLICY, LdevidPolicy
from keyfab.errors import ConfigError
from keyfab.names import check_name
from keyfab.provision.devices import check_placeholders
from keyfab.rot import KeyAlgorithm, check_label, check_options, driver
from keyfab.securefile import read_bounded

MAX_RECIPE_BYTES = 1 << 20
MAX_OBJECT_BYTES = 1 << 20
MAX_SERIAL = 64
"""The ``devices.serial`` column: no serial a batch makes may be longer."""
MAX_TEMPLATE = 128
MAX_FORMAT_WIDTH = 32
"""The widest ``{seq:NNd}`` (or precision) a serial template may ask for."""
_SERIAL_FIELDS = frozenset({"seq", "slot", "batch", "product"})
_NUMBERS = re.compile(r"\d+")


def _printable(text: str, what: str) -> str:
    """Refuse control characters (NUL, newline, escapes): they end up in certificates."""
    if not text.isprintable():
        raise ValueError(f"{what} must not contain control characters")
    return text


def _check_spec(field: str, spec: str | None, conversion: str | None) -> None:
    """One replacement field of a serial template: no conversion, no nesting, small widths."""
    if conversion is not None or (spec and "{" in spec):
        raise ValueError(f"serial template field {{{field}}}: no '!' conversions or nested fields")
    if any(int(n) > MAX_FORMAT_WIDTH for n in _NUMBERS.findall(spec or "")):
        raise ValueError(f"serial template widths are at most {MAX_FORMAT_WIDTH}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Product(_Strict):
    name: str = Field(
        description="product name: goes into serials, certificates and the registry",
        examples=["acme-gateway"],
    )
    hw_type: str = Field(
        pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$",
        description="hwType OID of the IDevID's hardwareModuleName (your own OID arc)",
        examples=["1.3.6.1.4.1.99999.1.1"],
    )
    serial: str = Field(
        "{product}-{seq:08d}",
        max_length=MAX_TEMPLATE,
        description="serial number template: {seq} (required, from the database), {slot}, "
        "{batch}, {product}; at most 64 characters once filled",
    )
    organization: str = Field(
        "", max_length=64, description="organizationName in device certificates (64 at most)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        """The one name alphabet: the product name goes into serials and certificates."""
        try:
            return check_name("product", name)
        except ConfigError as error:
            raise _one_line(error) from None

    @field_validator("organization")
    @classmethod
    def _organization(cls, organization: str) -> str:
        return _printable(organization, "organization")

    @field_validator("serial")
    @classmethod
    def _serial_template(cls, template: str) -> str:
        """Only plain fields with small widths, so format() can neither reach
        attributes nor be asked for a gigabyte of zero padding."""
        _printable(template, "serial template")
        try:
            parts = [p for p in string.Formatter().parse(template) if p[1] is not None]
        except ValueError as error:
            raise ValueError(f"bad serial template: {error}") from None
        fields = [field for _, field, _, _ in parts]
        unknown = set(fields) - _SERIAL_FIELDS
        if unknown or "seq" not in fields:
            raise ValueError(f"serial template must use {{seq}} and only {sorted(_SERIAL_FIELDS)}")
        for _, field, spec, conversion in parts:
            _check_spec(str(field), spec, conversion)
        return template

    @model_validator(mode="after")
    def _serial_formats(self) -> Product:
        """Format one serial now, so a bad format code fails at parse time, not in a batch."""
        try:
            self.serial.format(seq=0, slot=0, batch="b", product=self.name)
        except (ValueError, TypeError) as error:
            raise ValueError(f"bad serial template: {error}") from None
        return self


class RotSettings(BaseModel):
    """``[rot]``: which driver opens each device, and that driver's options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    driver: str = Field(
        default="soft",
        description="root-of-trust driver that opens each device (soft, pkcs11, tpm2); "
        "--backend overrides it; the driver's own options follow it in [rot]",
    )

    @field_validator("driver")
    @classmethod
    def _known_driver(cls, name: str) -> str:
        """Only drivers in the table: anything else would fail on every device."""
        try:
            return driver(name).name
        except ConfigError as error:
            raise _one_line(error) from None

    @model_validator(mode="after")
    def _driver_options(self) -> RotSettings:
        """The options must fit the driver's schema (checked as given, placeholders and all)."""
        try:
            check_options(self.driver, self.options())
            check_placeholders(self.options())
        except ConfigError as error:
            raise _one_line(error) from None
        return self

    def options(self) -> dict[str, Any]:
        """The driver's own options: everything in ``[rot]`` except ``driver``."""
        return dict(self.model_extra or {})


def _one_line(error: ConfigError) -> PydanticCustomError:
    """A ConfigError as a validation error whose message is its text, unprefixed."""
    return PydanticCustomError("rot", "{reason}", {"reason": str(error)})


def _label(label: str) -> str:
    """A key or object label: the root of trust's rule, which is the one name alphabet."""
    try:
        return check_label(label)
    except ConfigError as error:
        raise _one_line(error) from None


class KeyEntry(_Strict):
    label: str = Field(description="key label inside the device", examples=["idevid"])
    algorithm: KeyAlgorithm = Field(
        KeyAlgorithm.EC_P256,
        description="key type: " + ", ".join(a.value for a in KeyAlgorithm),
    )
    profile: Literal["idevid"] | None = Field(
        "idevid",
        description="certificate profile the manufacturing CA issues for the key "
        "(idevid: an IEEE 802.1AR IDevID certificate)",
    )

    @field_validator("label")
    @classmethod
    def _label(cls, label: str) -> str:
        return _label(label)


class ObjectEntry(_Strict):
    label: str = Field(description="object label inside the device", examples=["fit-key"])
    file: Path = Field(
        description="file written byte for byte into every device (relative: to the recipe)",
        examples=["keys/firmware.pub.pem"],
    )

    @field_validator("label")
    @classmethod
    def _label(cls, label: str) -> str:
        return _label(label)


class Finish(_Strict):
    lock: bool = Field(default=True, description="lock the device after provisioning (no new keys)")


class Recipe(_Strict):
    product: Product = Field(description="what is made")
    rot: RotSettings = Field(RotSettings(), description="where each device's keys live")
    keys: list[KeyEntry] = Field(
        min_length=1, max_length=16, description="keys generated in every device (1 to 16)"
    )
    objects: list[ObjectEntry] = Field(
        default_factory=list, max_length=64, description="data written into every device"
    )
    counters: dict[str, int] = Field(
        default_factory=dict,
        description="monotonic counters and their start values (not on pkcs11)",
    )
    finish: Finish = Field(Finish(), description="what happens after the certificates")
    ldevid: LdevidPolicy = Field(
        DEFAULT_POLICY,
        description="operational certificates (IEEE 802.1AR LDevID) enrolled in the field",
    )

    @model_validator(mode="after")
    def _unique_labels(self) -> Recipe:
        for kind, labels in (
            ("key", [k.label for k in self.keys]),
            ("object", [o.label for o in self.objects]),
        ):
            if len(labels) != len(set(labels)):
                raise ValueError(f"{kind} labels must be unique")
        for name, value in self.counters.items():
            _label(name)
            if value < 0:
                raise ValueError(f"counter {name!r} cannot start below zero")
        return self

    def serial(self, seq: int, slot: int, batch: str) -> str:
        return self.product.serial.format(
            seq=seq, slot=slot, batch=batch, product=self.product.name
        )


def _toml(source: str, origin: str) -> dict[str, Any]:
    """The recipe's TOML as data, size checked first."""
    if len(source.encode()) > MAX_RECIPE_BYTES:
        raise ConfigError(f"{origin}: larger than {MAX_RECIPE_BYTES} bytes")
    try:
        return tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply") from None


def parse_recipe(source: str, origin: str = "recipe") -> Recipe:
    """A validated Recipe from TOML text, or ConfigError naming the first problem."""
    data = _toml(source, origin)
    try:
        return Recipe.model_validate(data)
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "recipe"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{origin}: {where}: {message}{more}") from None


def load_recipe(path: Path, driver_name: str | None = None) -> tuple[Recipe, str]:
    """Read and validate a recipe file; returns the recipe and its text.

    ``driver_name`` replaces the recipe's ``[rot] driver`` (``--backend``) before
    validation, so the options are checked against the driver that will run;
    the returned text carries the replacement, for a resume to use the same.
    """
    source = read_recipe(path)
    if driver_name is not None:
        source = with_driver(source, driver_name, str(path))
    return parse_recipe(source, str(path)), source


def read_recipe(path: Path) -> str:
    """A recipe file's text: a bounded regular file of UTF-8 (checked before it is parsed)."""
    data = read_bounded(path, MAX_RECIPE_BYTES, "recipe")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read recipe {path}: not UTF-8 text") from None


def with_driver(source: str, driver_name: str, origin: str = "recipe") -> str:
    """The recipe text with ``[rot] driver`` set to ``driver_name``, a driver that exists."""
    driver(driver_name)
    data = _toml(source, origin)
    rot = data.setdefault("rot", {})
    if not isinstance(rot, dict):
        raise ConfigError(f"{origin}: rot: must be a table")
    rot["driver"] = driver_name
    return tomli_w.dumps(data)


def load_objects(recipe: Recipe, base: Path) -> dict[str, bytes]:
    """The data objects a recipe writes into every device, read once per batch."""
    objects: dict[str, bytes] = {}
    for entry in recipe.objects:
        path = entry.file if entry.file.is_absolute() else base / entry.file
        objects[entry.label] = read_bounded(path, MAX_OBJECT_BYTES, f"object {entry.label!r}:")
    return objects
