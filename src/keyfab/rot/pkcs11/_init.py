"""Initialising a fresh token: C_InitToken on a free slot, then the user PIN.

python-pkcs11 has no ``C_InitToken``, so this one call goes through ctypes to the
same module file: ``dlopen`` hands back the library python-pkcs11 already loaded
and initialised, so both share one module state. This is plain PKCS#11, not a
SoftHSM2 tool, so a recipe can initialise blank tokens on any module that keeps
an uninitialised slot (SoftHSM2 always offers one).
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import pkcs11
from pkcs11 import TokenFlag

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Module  # noqa: N812 - the binding's class is lowercase

from keyfab.errors import ConfigError, KeyNotFoundError, RotError
from keyfab.rot.pkcs11._errors import translated
from keyfab.rot.pkcs11._session import load_module, module_calls, token_serial

_LABEL_BYTES = 32
_CKR_OK = 0
_CKR_PIN_INCORRECT = 0xA0


def _free_slot(module: Module) -> pkcs11.Slot:
    with translated("pkcs11: look for an uninitialised token"):
        for slot in module.get_slots(token_present=True):
            if not slot.get_token().flags & TokenFlag.TOKEN_INITIALIZED:
                free: pkcs11.Slot = slot
                return free
    raise KeyNotFoundError("pkcs11: the module has no uninitialised token left")


def initialise_token(module_path: str, label: str, so_pin: str, user_pin: str) -> None:
    """Give a blank token ``label``, an SO PIN and a user PIN."""
    encoded = label.encode("utf-8")
    if not encoded or len(encoded) > _LABEL_BYTES:
        raise ConfigError(f"pkcs11: token label {label!r} must be 1-{_LABEL_BYTES} bytes")
    with module_calls():
        module = load_module(module_path)
        before = _serials_labelled(module, label)
        _init_token(module_path, _free_slot(module).slot_id, so_pin, encoded, label)
        # Find the new token by what is new: modules may move it to another slot
        # (SoftHSM2 does), and an older token may carry the same label.
        new = [t for t in _tokens_labelled(module, label) if token_serial(t) not in before]
        if len(new) != 1:
            raise RotError(f"pkcs11: token {label!r} was initialised but cannot be found")
        with (
            translated(f"pkcs11 token {label!r}: set the user PIN"),
            new[0].open(rw=True, so_pin=so_pin) as session,
        ):
            session.init_pin(user_pin)


def _init_token(module_path: str, slot_id: int, so_pin: str, encoded: bytes, label: str) -> None:
    so = so_pin.encode("utf-8")
    c_init_token = ctypes.CDLL(module_path).C_InitToken
    c_init_token.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    c_init_token.restype = ctypes.c_ulong
    rv = c_init_token(slot_id, so, len(so), encoded.ljust(_LABEL_BYTES, b" "))
    if rv != _CKR_OK:
        reason = "wrong SO PIN" if rv == _CKR_PIN_INCORRECT else "the module refused"
        raise RotError(f"pkcs11: cannot initialise token {label!r}: {reason}")


def _tokens_labelled(module: Module, label: str) -> list[pkcs11.Token]:
    with translated(f"pkcs11: list tokens (token={label})"):
        return [t for t in (s.get_token() for s in module.get_slots(True)) if t.label == label]


def _serials_labelled(module: Module, label: str) -> set[str]:
    return {token_serial(t) for t in _tokens_labelled(module, label)}
