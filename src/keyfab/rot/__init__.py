"""Roots of trust: the one seam between keyfab and key-holding hardware."""

from __future__ import annotations

from keyfab.errors import ConfigError
from keyfab.rot._keys import HardwareECPrivateKey, HardwareRSAPrivateKey
from keyfab.rot.base import (
    Capability,
    EnrolledRot,
    Evidence,
    KeyAlgorithm,
    KeySpec,
    KeyUsage,
    MonotonicCounter,
    PcrApproval,
    PrivateKey,
    PublicKey,
    RootOfTrust,
    RotInfo,
    SealBinding,
    SealingRot,
    check_label,
)
from keyfab.rot.drivers import DRIVERS, Driver, check_options, driver, driver_names, open_uri
from keyfab.rot.protection import KeyProtection, key_protection
from keyfab.rot.uri import KeyUri, parse_key_uri, read_pin, soft_key_uri

__all__ = [
    "DRIVERS",
    "Capability",
    "Driver",
    "EnrolledRot",
    "Evidence",
    "HardwareECPrivateKey",
    "HardwareRSAPrivateKey",
    "KeyAlgorithm",
    "KeyProtection",
    "KeySpec",
    "KeyUri",
    "KeyUsage",
    "MonotonicCounter",
    "PcrApproval",
    "PrivateKey",
    "PublicKey",
    "RootOfTrust",
    "RotInfo",
    "SealBinding",
    "SealingRot",
    "check_label",
    "check_options",
    "driver",
    "driver_names",
    "key_protection",
    "load_key",
    "open_rot",
    "parse_key_uri",
    "read_pin",
    "soft_key_uri",
]


def open_rot(uri: str | KeyUri) -> RootOfTrust:
    """Open the root of trust a key URI points into.

    The driver (from :mod:`keyfab.rot.drivers`) is imported on first use: a
    PKCS#11 or TPM library is only needed by those who use that hardware.
    """
    return open_uri(parse_key_uri(uri) if isinstance(uri, str) else uri)


def load_key(uri: str | KeyUri) -> PrivateKey:
    """The private key a URI names, with its root of trust kept open behind it."""
    parsed = parse_key_uri(uri) if isinstance(uri, str) else uri
    if parsed.label is None:
        raise ConfigError(f"key URI {parsed} does not name a key")
    return open_rot(parsed).key(parsed.label)
