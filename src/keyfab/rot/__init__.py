"""Roots of trust: the one seam between keyfab and key-holding hardware."""

from __future__ import annotations

import importlib

from keyfab.errors import ConfigError
from keyfab.rot._keys import HardwareECPrivateKey, HardwareRSAPrivateKey
from keyfab.rot.base import (
    Capability,
    Evidence,
    KeyAlgorithm,
    KeySpec,
    MonotonicCounter,
    PrivateKey,
    PublicKey,
    RootOfTrust,
    RotInfo,
    check_label,
)
from keyfab.rot.uri import KeyUri, parse_key_uri, read_pin, soft_key_uri

__all__ = [
    "Capability",
    "Evidence",
    "HardwareECPrivateKey",
    "HardwareRSAPrivateKey",
    "KeyAlgorithm",
    "KeySpec",
    "KeyUri",
    "MonotonicCounter",
    "PrivateKey",
    "PublicKey",
    "RootOfTrust",
    "RotInfo",
    "check_label",
    "load_key",
    "open_rot",
    "parse_key_uri",
    "read_pin",
    "soft_key_uri",
]

# Drivers are imported on first use: a PKCS#11 or TPM library is only needed
# by those who use that hardware. Each module provides ``open_uri(KeyUri)``.
_DRIVERS = {"soft": "keyfab.rot.soft", "pkcs11": "keyfab.rot.pkcs11", "tpm2": "keyfab.rot.tpm2"}


def open_rot(uri: str | KeyUri) -> RootOfTrust:
    """Open the root of trust a key URI points into."""
    parsed = parse_key_uri(uri) if isinstance(uri, str) else uri
    try:
        driver = importlib.import_module(_DRIVERS[parsed.scheme])
    except ImportError as error:
        raise ConfigError(f"the {parsed.scheme} driver is not available: {error}") from None
    rot: RootOfTrust = driver.open_uri(parsed)
    return rot


def load_key(uri: str | KeyUri) -> PrivateKey:
    """The private key a URI names, with its root of trust kept open behind it."""
    parsed = parse_key_uri(uri) if isinstance(uri, str) else uri
    if parsed.label is None:
        raise ConfigError(f"key URI {parsed} does not name a key")
    return open_rot(parsed).key(parsed.label)
