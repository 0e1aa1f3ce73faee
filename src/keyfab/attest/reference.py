"""A product's attestation policy: TOML validated as strictly as recipes.

Unknown keys are errors (a typo must not silently drop a check) and every
problem is one line naming where it is. What a policy can ask for, and why
each shape: ``docs/attestation.md``. Evaluating it: ``attest.verdict``.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from keyfab.authority.references import store_policy
from keyfab.errors import ConfigError
from keyfab.names import check_name
from keyfab.registry import Registry, queries
from keyfab.securefile import read_bounded

if TYPE_CHECKING:
    from keyfab.authority import Authority

MAX_POLICY_BYTES = 256 << 10
MAX_PCR = 23
BANK_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
RELEASE_PCRS = {8: "linux", 9: "initrd"}
"""PCRs whose value U-Boot's measured boot sets from the FIT alone: one event each."""
_TYPE = r"^(EV_[A-Z0-9_]+|0x[0-9a-fA-F]{1,8})$"
_LOOPBACK_NAMES = ("localhost",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Attestation(_Strict):
    product: str = Field(description="the product these devices are", examples=["acme-gateway"])
    bank: Literal["sha1", "sha256", "sha384", "sha512"] = Field(
        "sha256", description="the PCR bank quoted and compared"
    )
    pcrs: list[Annotated[int, Field(ge=0, le=MAX_PCR)]] = Field(
        min_length=1, max_length=MAX_PCR + 1, description="the PCR selection each quote covers"
    )

    @field_validator("product")
    @classmethod
    def _product(cls, product: str) -> str:
        try:
            return check_name("product", product)
        except ConfigError as error:
            raise PydanticCustomError("name", "{reason}", {"reason": str(error)}) from None

    @field_validator("pcrs")
    @classmethod
    def _unique(cls, pcrs: list[int]) -> list[int]:
        if len(set(pcrs)) != len(pcrs):
            raise ValueError("each PCR once")
        return sorted(pcrs)


class PcrValues(_Strict):
    """``[pcr.N]``: the values PCR N may hold, given, or those of the product's releases."""

    allowed: list[Annotated[str, Field(pattern=r"^[0-9a-fA-F]+$")]] = Field(
        default_factory=list, max_length=1024, description="allowed values (hex)"
    )
    releases: bool = Field(
        False, description="PCR 8 or 9: the value U-Boot's measurements of a release give"
    )

    @model_validator(mode="after")
    def _one_source(self) -> PcrValues:
        if bool(self.allowed) == self.releases:
            raise ValueError("give either allowed = [...] or releases = true")
        return self


class FitRelease(_Strict):
    """The FIT configuration U-Boot measured is one of the product's recorded releases."""

    kind: Literal["fit-release"]


class SecureBoot(_Strict):
    """UEFI secure boot was on: PCR 7 measured the SecureBoot variable as 1."""

    kind: Literal["secure-boot"]


class NoEventType(_Strict):
    """No event of these types (optionally: whose data contains ``data``), e.g. debug events."""

    kind: Literal["no-event-type"]
    types: list[Annotated[str, Field(pattern=_TYPE)]] = Field(min_length=1, max_length=64)
    data: str | None = Field(None, min_length=1, max_length=256)


Action = Literal["mark-untrusted", "revoke-operational", "webhook"]
Rule = Annotated[FitRelease | SecureBoot | NoEventType, Field(discriminator="kind")]


class OnFailure(_Strict):
    actions: list[Action] = Field(default=["mark-untrusted"], max_length=3)
    webhook: str | None = Field(None, max_length=2048)

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, url: str | None) -> str | None:
        """HTTPS, or plain HTTP to this host only: a verdict must not cross a network in clear."""
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname:
            return url
        if parts.scheme == "http" and _loopback(parts.hostname):
            return url
        raise ValueError("webhook must be an https:// URL (http:// only to localhost)")

    @model_validator(mode="after")
    def _webhook_needed(self) -> OnFailure:
        if len(set(self.actions)) != len(self.actions):
            raise ValueError("each action once")
        if ("webhook" in self.actions) != (self.webhook is not None):
            raise ValueError("the webhook action and the webhook URL go together")
        return self


def _loopback(host: str | None) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Policy(_Strict):
    attestation: Attestation
    pcr: dict[Annotated[int, Field(ge=0, le=MAX_PCR)], PcrValues] = Field(default_factory=dict)
    rule: list[Rule] = Field(default_factory=list, max_length=64)
    on_failure: OnFailure = OnFailure(webhook=None)

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        """Every value and rule is about PCRs the quote covers, in the bank's digest size."""
        selected, size = set(self.attestation.pcrs), BANK_SIZES[self.attestation.bank]
        for index, values in self.pcr.items():
            if index not in selected:
                raise ValueError(f"pcr.{index}: not in attestation.pcrs")
            if values.releases and index not in RELEASE_PCRS:
                raise ValueError(f"pcr.{index}: releases = true is for PCR 8 or 9 only")
            if any(len(value) != 2 * size for value in values.allowed):
                raise ValueError(
                    f"pcr.{index}: values must be {size}-byte hex ({self.attestation.bank})"
                )
        for rule in self.rule:
            needed = {"fit-release": {8, 9}, "secure-boot": {7}}.get(rule.kind, set())
            if not needed <= selected:
                raise ValueError(
                    f"rule {rule.kind} needs PCRs {sorted(needed)} in attestation.pcrs"
                )
        return self

    @property
    def product(self) -> str:
        return self.attestation.product

    @property
    def uses_releases(self) -> bool:
        """Whether a verdict needs the product's recorded releases (read only then)."""
        return any(v.releases for v in self.pcr.values()) or any(
            r.kind == "fit-release" for r in self.rule
        )


def parse_policy(source: str, origin: str = "policy") -> Policy:
    """A validated Policy from TOML text, or ConfigError naming the first problem."""
    if len(source.encode()) > MAX_POLICY_BYTES:
        raise ConfigError(f"{origin}: larger than {MAX_POLICY_BYTES} bytes")
    try:
        return Policy.model_validate(tomllib.loads(source))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin}: not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{origin}: nested too deeply") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = "".join(f"{part}: " for part in [".".join(map(str, first["loc"]))] if part)
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{origin}: {where}{message}{more}") from None


def read_policy(path: Path) -> tuple[Policy, str]:
    """A policy file, bounded and validated: the policy and its text (what is stored)."""
    data = read_bounded(path, MAX_POLICY_BYTES, "policy")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read policy {path}: not UTF-8 text") from None
    return parse_policy(text, str(path)), text


def set_policy(authority: Authority, path: Path, actor: str) -> tuple[Policy, bool]:
    """Validate a policy file and store it for its product; True if it changed anything."""
    policy, text = read_policy(path)
    return policy, store_policy(authority, policy.product, text, actor)


def stored_policy(registry: Registry, product: str) -> tuple[Policy, str]:
    """A product's stored policy, parsed again (it was valid when stored), and its text."""
    text = queries.attestation_policy(registry, product).policy
    return parse_policy(text, f"policy of {product}"), text
