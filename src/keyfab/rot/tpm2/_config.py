"""Settings of the ``tpm2`` driver, read from a key URI or a recipe's ``[rot]`` table.

Kept apart from the driver so that the rules (which TCTIs, which handle ranges,
which labels map where) are readable in one place and testable without a TPM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyfab.errors import ConfigError
from keyfab.rot.base import KeyAlgorithm, check_label
from keyfab.rot.options import Tpm2Options as Tpm2Schema

TCTI_NAMES = frozenset({"swtpm", "mssim", "device", "tabrmd"})

# Persistent handles for owner-authorised objects (TPM 2.0 Part 2, 0x81000000-0x817FFFFF);
# 0x81010000-0x8101FFFF is reserved for endorsement keys, so keyfab stays above it.
PERSISTENT_FIRST = 0x81000000
PERSISTENT_LAST = 0x817FFFFF
DEFAULT_HANDLES = {"iak": 0x81020000, "idevid": 0x81020001}
_DERIVED_HANDLE_BASE = 0x81020100
_DERIVED_HANDLE_SPAN = 0xFF00

# NV indices in the owner range (0x01000000-0x013FFFFF).
NV_FIRST = 0x01000000
NV_LAST = 0x013FFFFF
_DERIVED_NV_BASE = 0x01100000
_DERIVED_NV_SPAN = 0x100000
_DERIVED_COUNTER_BASE = 0x01200000

_KNOWN_OPTIONS = frozenset(Tpm2Schema.model_fields)  # the names the recipe's schema knows


@dataclass(frozen=True)
class Tcti:
    """Which TCTI to load and its configuration string (``swtpm`` + ``host=...,port=...``)."""

    name: str
    conf: str

    @classmethod
    def parse(cls, text: str) -> Tcti:
        name, _, conf = text.partition(":")
        if name not in TCTI_NAMES:
            raise ConfigError(
                f"tpm2: unknown TCTI {name!r}; use one of {', '.join(sorted(TCTI_NAMES))}"
            )
        return cls(name, conf)

    def __str__(self) -> str:
        return f"{self.name}:{self.conf}" if self.conf else self.name


def parse_handle(value: object, first: int, last: int, what: str) -> int:
    """A handle given as an int or a ``0x...`` string, checked against its range."""
    try:
        handle = value if isinstance(value, int) else int(str(value), 0)
    except ValueError:
        raise ConfigError(f"tpm2: {what} {value!r} is not a number") from None
    if not first <= handle <= last:
        raise ConfigError(f"tpm2: {what} {handle:#010x} is outside {first:#010x}-{last:#010x}")
    return handle


def _derived(label: str, base: int, span: int) -> int:
    """A stable slot for a label nobody mapped: the recipe need not list every object."""
    digest = hashlib.sha256(label.encode()).digest()
    return base + int.from_bytes(digest[:4], "big") % span


@dataclass(frozen=True)
class Tpm2Options:
    """Everything the driver needs to know; only ``tcti`` is required."""

    tcti: Tcti
    handles: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_HANDLES))
    nv: Mapping[str, int] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)
    iak_label: str = "iak"
    iak_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256
    ek: KeyAlgorithm | None = None  # which EK to use; None: the first with a certificate

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], slot: int = 0) -> Tpm2Options:
        """Read a recipe's ``[rot]`` table (``driver`` already removed).

        ``tcti`` is one TCTI, or a list with one per slot: a station with a
        socket (or a swtpm) per device under test.
        """
        unknown = set(options) - _KNOWN_OPTIONS
        if unknown:
            raise ConfigError(f"tpm2: unknown [rot] option(s): {', '.join(sorted(unknown))}")
        tcti = options.get("tcti")
        if isinstance(tcti, list):
            if not 0 <= slot < len(tcti):
                raise ConfigError(f"tpm2: slot {slot} has no TCTI ({len(tcti)} listed in tcti)")
            tcti = tcti[slot]
        if not isinstance(tcti, str):
            raise ConfigError(
                'tpm2: [rot] needs tcti = "swtpm:host=...,port=..." or "device:/dev/tpmrm0"'
            )
        handles = dict(DEFAULT_HANDLES)
        handles.update(
            _handle_map(options.get("handles", {}), PERSISTENT_FIRST, PERSISTENT_LAST, "handle")
        )
        iak_algorithm = _algorithm(options.get("iak_algorithm", "ec-p256"), "iak_algorithm")
        ek = _algorithm(options["ek"], "ek") if "ek" in options else None
        return cls(
            tcti=Tcti.parse(tcti),
            handles=handles,
            nv=_handle_map(options.get("nv", {}), NV_FIRST, NV_LAST, "NV index"),
            counters=_handle_map(options.get("counters", {}), NV_FIRST, NV_LAST, "counter index"),
            iak_label=check_label(str(options.get("iak", "iak"))),
            iak_algorithm=iak_algorithm,
            ek=ek,
        )

    def key_handle(self, label: str) -> int:
        """The persistent handle of a key: mapped, literal (``0x81...``) or derived."""
        if label in self.handles:
            return self.handles[label]
        if label.lower().startswith("0x"):
            return parse_handle(label, PERSISTENT_FIRST, PERSISTENT_LAST, "persistent handle")
        return _derived(check_label(label), _DERIVED_HANDLE_BASE, _DERIVED_HANDLE_SPAN)

    def nv_index(self, label: str) -> int:
        """The NV index holding data object ``label``."""
        if label in self.nv:
            return self.nv[label]
        return _derived(check_label(label), _DERIVED_NV_BASE, _DERIVED_NV_SPAN)

    def counter_index(self, name: str) -> int:
        """The NV counter index behind monotonic counter ``name``."""
        if name in self.counters:
            return self.counters[name]
        return _derived(check_label(name), _DERIVED_COUNTER_BASE, _DERIVED_NV_SPAN)


def _handle_map(value: object, first: int, last: int, what: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"tpm2: {what}s must be a table of label = handle")
    return {
        check_label(str(k)): parse_handle(v, first, last, f"{what} of {k!r}")
        for k, v in value.items()
    }


def _algorithm(value: object, what: str) -> KeyAlgorithm:
    try:
        return KeyAlgorithm(str(value))
    except ValueError:
        raise ConfigError(f"tpm2: unknown {what} {value!r}") from None
