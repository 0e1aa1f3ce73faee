"""The ``puf`` root of trust: keys re-derived from the silicon's own fingerprint, never stored.

Opening a device reads its SRAM start-up pattern (:mod:`.sources`). A new
device is enrolled there and then: the majority of five power-ups gives the
reference, the fuzzy extractor (:mod:`.extractor`) makes public helper data and
a 256-bit seed. Every later opening reads one power-up and reconstructs the
seed from it and the helper data. Keys are HKDF expansions of the seed per
label, turned into EC private scalars, so what the device directory holds is
public: helper data, key labels, objects, counters, the locked flag::

    puf.json   helper data (object ``puf-helper``), key labels and algorithms,
               objects (base64), counters, locked flag, power-up count; 0600

The device's unique id is derived from the seed too: the chip is its identity.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from keyfab import securefile
from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyNotFoundError,
    RotError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot._keys import HardwareECPrivateKey
from keyfab.rot._state import StateCounter
from keyfab.rot.base import (
    Capability,
    Evidence,
    KeyAlgorithm,
    KeySpec,
    MonotonicCounter,
    PrivateKey,
    RotInfo,
    check_label,
    check_random_size,
)
from keyfab.rot.puf.extractor import Bits, derive, enrol, parse_helper, reconstruct
from keyfab.rot.puf.sources import DumpFiles, ModelSource, PufSource
from keyfab.rot.uri import KeyUri

HELPER_LABEL = "puf-helper"
ENROLMENT_READS = 5
STATE_FILE = "puf.json"
MAX_STATE = 1 << 22
_ORDERS = {
    KeyAlgorithm.EC_P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    KeyAlgorithm.EC_P384: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}


def private_scalar(seed: bytes, label: str, algorithm: KeyAlgorithm) -> int:
    """The key's scalar in [1, n-1], from 64 extra bits (FIPS 186-5 A.2.1): no bias."""
    order = _ORDERS[algorithm]
    info = f"keyfab puf key\0{algorithm.value}\0{label}".encode()
    wide = derive(seed, info, (order.bit_length() + 64 + 7) // 8)
    return int.from_bytes(wide, "big") % (order - 1) + 1


def _decoded(label: str, stored: object) -> bytes:
    """An object's bytes from the state file; a damaged entry is one line, not a traceback."""
    try:
        return base64.b64decode(str(stored), validate=True)
    except ValueError:
        raise RotError(f"PUF device state: object {label!r} is damaged") from None


class PufRootOfTrust:
    """One PUF device: its source of start-up patterns and, unless None, its directory."""

    def __init__(self, source: PufSource, directory: Path | None = None):
        self._source = source
        self._directory = directory
        self._dirty = False
        self._state = self._load_state()
        self._seed = self._power_up()
        self.info = RotInfo(
            kind="puf",
            vendor="keyfab",
            model=f"SRAM PUF, {source.cells} cells",
            unique_id=derive(self._seed, b"keyfab puf unique id", 16).hex(),
            capabilities=frozenset({Capability.MONOTONIC_COUNTER, Capability.LOCK}),
        )

    def _load_state(self) -> dict[str, Any]:
        fresh = {"power_ups": 0, "keys": {}, "objects": {}, "counters": {}, "locked": False}
        if self._directory is None:
            return fresh
        path = self._directory / STATE_FILE
        if not path.exists():
            return fresh
        try:
            return dict(json.loads(securefile.read_bounded(path, MAX_STATE, "PUF device state")))
        except ValueError as error:
            raise RotError(f"PUF device state {path} is unreadable: {error}") from None

    def _read(self) -> Bits:
        power_up = int(self._state["power_ups"])
        self._state["power_ups"] = power_up + 1
        self._changed()
        return self._source.read(power_up)

    def _power_up(self) -> bytes:
        """The seed: reconstructed from one read, or, for a new device, enrolled."""
        stored = self._state["objects"].get(HELPER_LABEL)
        if stored is not None:
            helper = parse_helper(_decoded(HELPER_LABEL, stored), self._source.cells)
            return reconstruct(self._read(), helper)
        reads = np.stack([self._read() for _ in range(ENROLMENT_READS)])
        reference = (reads.sum(axis=0) > ENROLMENT_READS // 2).astype(np.uint8)
        helper, seed = enrol(reference)
        self._state["objects"][HELPER_LABEL] = base64.b64encode(helper.to_bytes()).decode()
        return seed

    @property
    def helper_digest(self) -> str:
        """SHA-256 of the helper data, hex: the registry keeps it as the device's evidence."""
        return parse_helper(self.load_object(HELPER_LABEL), self._source.cells).digest

    def enrolment_record(self) -> Mapping[str, str]:
        """What the registry records about this device's enrolment (public values only)."""
        return {"format": "keyfab-puf-v1", "helper_data_sha256": self.helper_digest}

    @property
    def locked(self) -> bool:
        return bool(self._state["locked"])

    def _check_unlocked(self) -> None:
        if self.locked:
            raise RotLockedError(f"PUF root of trust {self.info.unique_id} is locked")

    def _changed(self) -> None:
        self._dirty = True

    def flush(self) -> None:
        """Write the state atomically if anything changed."""
        if self._dirty and self._directory is not None:
            data = json.dumps(self._state).encode()
            try:
                self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                securefile.write_secret(self._directory / STATE_FILE, data, replace=True)
            except OSError as error:
                raise RotError(f"cannot write {self._directory}: {error.strerror}") from None
        self._dirty = False

    def generate_key(self, label: str, spec: KeySpec) -> PrivateKey:
        check_label(label)
        self._check_unlocked()
        if spec.algorithm not in _ORDERS:
            raise UnsupportedError(f"the puf driver derives EC keys only, not {spec.algorithm}")
        if label in self._state["keys"]:
            raise KeyExistsError(f"key {label!r} already exists")
        self._state["keys"][label] = spec.algorithm.value
        self._changed()
        self.flush()
        return self.key(label)

    def key(self, label: str) -> PrivateKey:
        check_label(label)
        algorithm = self._state["keys"].get(label)
        if algorithm is None:
            raise KeyNotFoundError(f"no key {label!r}")
        spec = KeyAlgorithm(algorithm)
        private = ec.derive_private_key(private_scalar(self._seed, label, spec), spec.curve)

        def sign(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            return private.sign(digest, ec.ECDSA(utils.Prehashed(algorithm)))

        return HardwareECPrivateKey(label, private.public_key(), sign)

    def random(self, n: int) -> bytes:
        return secrets.token_bytes(check_random_size(n))

    def store_object(self, label: str, data: bytes) -> None:
        check_label(label)
        self._check_unlocked()
        if label == HELPER_LABEL:
            raise ConfigError(f"object {HELPER_LABEL!r} is the PUF's helper data: not writable")
        self._state["objects"][label] = base64.b64encode(data).decode()
        self._changed()

    def load_object(self, label: str) -> bytes:
        check_label(label)
        stored = self._state["objects"].get(label)
        if stored is None:
            raise KeyNotFoundError(f"no object {label!r}")
        return _decoded(label, stored)

    def certify(self, label: str, nonce: bytes) -> Evidence | None:
        return None

    def counter(self, name: str) -> MonotonicCounter:
        return StateCounter(self._state["counters"], check_label(name), self._changed)

    def lock(self) -> None:
        if not self.locked:
            self._state["locked"] = True
            self._changed()
        self.flush()

    def close(self) -> None:
        self.flush()


def source(options: Mapping[str, Any]) -> PufSource:
    """The device's PUF as its (checked) options describe it."""
    from keyfab.rot.options import PufOptions

    settings = PufOptions.model_validate(dict(options))
    if settings.source == "files":
        assert settings.dumps is not None  # the schema requires it
        return DumpFiles(Path(settings.dumps), settings.cells)
    chip = settings.chip or settings.path or secrets.token_hex(16)
    return ModelSource(
        chip, settings.cells, settings.ber, settings.bias, settings.temperature, settings.age
    )


def open_device(options: Mapping[str, Any], slot: int) -> PufRootOfTrust:
    """One device; a new one is enrolled and its state saved at once (its identity)."""
    path = options.get("path")
    rot = PufRootOfTrust(source(options), Path(str(path)) if path else None)
    rot.flush()
    return rot


_NUMBERS = {"cells": int, "ber": float, "bias": float, "temperature": float, "age": float}


def open_uri(uri: KeyUri) -> PufRootOfTrust:
    """``puf:path=DIR;object=LABEL`` plus any driver option as an attribute."""
    options: dict[str, Any] = {k: v for k, v in uri.attributes.items() if k != "object"}
    try:
        options.update({k: _NUMBERS[k](v) for k, v in options.items() if k in _NUMBERS})
    except ValueError:
        raise ConfigError(f"puf: URI {uri} has a non-numeric model parameter") from None
    return open_device(options, 0)
