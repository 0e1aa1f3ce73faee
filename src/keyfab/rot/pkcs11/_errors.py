"""PKCS#11 failures as one clear keyfab error line.

A PKCS#11 module reports failures as ``CKR_`` codes, which python-pkcs11 raises
as one exception class per code. Users need to know what to do (wrong PIN, token
missing, token full), not which code came back, so every call into the module
goes through :func:`translated`. The PIN is never part of any message: callers
pass only the action and the token's name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pkcs11.exceptions as p11e

from keyfab.errors import (
    ConfigError,
    KeyfabError,
    KeyNotExportableError,
    KeyNotFoundError,
    RotError,
    RotLockedError,
    UnsupportedError,
)

_MAPPED: tuple[tuple[tuple[type[p11e.PKCS11Error], ...], type[KeyfabError], str], ...] = (
    ((p11e.PinIncorrect,), RotError, "wrong PIN"),
    (
        (p11e.PinLocked,),
        RotError,
        "the PIN is locked after too many wrong tries; the SO must reset it",
    ),
    ((p11e.PinExpired,), RotError, "the PIN has expired; set a new one"),
    (
        (p11e.PinLenRange, p11e.PinInvalid),
        ConfigError,
        "the PIN has an invalid length or characters",
    ),
    ((p11e.UserPinNotInitialized,), RotError, "the token has no user PIN yet; initialise it"),
    ((p11e.UserNotLoggedIn,), RotError, "not logged in: give a PIN (pin-source or pin-value)"),
    (
        (p11e.NoSuchToken, p11e.TokenNotPresent, p11e.SlotIDInvalid, p11e.DeviceRemoved),
        KeyNotFoundError,
        "token not found",
    ),
    ((p11e.TokenNotRecognised,), RotError, "the module does not recognise the token"),
    (
        (p11e.NoSuchKey, p11e.ObjectHandleInvalid, p11e.KeyHandleInvalid),
        KeyNotFoundError,
        "object not found",
    ),
    ((p11e.MultipleObjectsReturned,), RotError, "several objects match; name it by id"),
    ((p11e.MultipleTokensReturned,), ConfigError, "several tokens match; add serial= to the URI"),
    ((p11e.DeviceMemory, p11e.HostMemory), RotError, "the token is full (out of memory)"),
    ((p11e.SessionCount,), RotError, "the token has no free sessions"),
    (
        (p11e.TokenWriteProtected, p11e.SessionReadOnly, p11e.AttributeReadOnly),
        RotLockedError,
        "the token or object is write-protected",
    ),
    (
        (p11e.AttributeSensitive, p11e.KeyUnextractable, p11e.KeyNotWrappable),
        KeyNotExportableError,
        "the key material never leaves the token",
    ),
    (
        (
            p11e.MechanismInvalid,
            p11e.MechanismParamInvalid,
            p11e.FunctionNotSupported,
            p11e.KeySizeRange,
            p11e.DomainParamsInvalid,
            p11e.AttributeTypeInvalid,
            p11e.AttributeValueInvalid,
            p11e.TemplateInconsistent,
            p11e.TemplateIncomplete,
        ),
        UnsupportedError,
        "the token does not support this",
    ),
)


def _words(name: str) -> str:
    """``DeviceError`` -> ``device error``: the code's meaning without the code."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def translate(error: p11e.PKCS11Error, action: str) -> KeyfabError:
    """The keyfab error for a PKCS#11 failure while doing ``action``."""
    for classes, keyfab_class, reason in _MAPPED:
        if isinstance(error, classes):
            return keyfab_class(f"{action}: {reason}")
    return RotError(f"{action}: the PKCS#11 module failed ({_words(type(error).__name__)})")


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a block of PKCS#11 calls; failures leave it as one KeyfabError line."""
    try:
        yield
    except p11e.PKCS11Error as error:
        raise translate(error, action) from None
