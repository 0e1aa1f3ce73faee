"""PKCS#11 failures reach the user as one clear line, without PINs or CKR_ codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pkcs11.exceptions as p11e
import pytest

from keyfab.errors import (
    ConfigError,
    KeyfabError,
    KeyNotExportableError,
    KeyNotFoundError,
    RotError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot import load_key, open_rot
from keyfab.rot.pkcs11._errors import translate, translated

if TYPE_CHECKING:
    from pathlib import Path

    from .conftest import SoftHsm

WRONG_PIN = "wrong-9137"


def _one_clean_line(error: BaseException, *secrets: str) -> str:
    text = str(error)
    assert "\n" not in text
    assert "CKR" not in text
    for secret in secrets:
        assert secret not in text
    return text


def test_pkcs11_wrong_pin_on_first_login(softhsm: SoftHsm) -> None:
    with pytest.raises(RotError) as caught:
        open_rot(softhsm.uri("wrong-pin", pin=WRONG_PIN))  # no test logs in here rightly
    text = _one_clean_line(caught.value, WRONG_PIN, softhsm.pin)
    assert text == "pkcs11 token 'wrong-pin': log in: wrong PIN"


def test_pkcs11_wrong_pin_after_the_process_logged_in(softhsm: SoftHsm) -> None:
    open_rot(softhsm.uri("errors"))  # the right PIN logs the process in
    with pytest.raises(RotError, match="wrong PIN") as caught:
        open_rot(softhsm.uri("errors", pin=WRONG_PIN))
    _one_clean_line(caught.value, WRONG_PIN, softhsm.pin)


def test_pkcs11_token_and_object_not_found(softhsm: SoftHsm) -> None:
    with pytest.raises(KeyNotFoundError) as caught:
        open_rot(softhsm.uri("no-such-token"))
    assert (
        _one_clean_line(caught.value, softhsm.pin) == "pkcs11: no token matches token=no-such-token"
    )
    with pytest.raises(KeyNotFoundError, match="has no key 'absent'"):
        load_key(softhsm.uri("errors", "absent"))
    with pytest.raises(KeyNotFoundError, match="has no object 'absent'"):
        open_rot(softhsm.uri("errors")).load_object("absent")


def test_pkcs11_module_and_pin_file_problems(softhsm: SoftHsm, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_rot(f"pkcs11:token=errors?module-path={tmp_path}/nothing.so")
    not_a_module = tmp_path / "fake.so"
    not_a_module.write_bytes(b"\x7fELF but not really")
    with pytest.raises(ConfigError, match="not a loadable PKCS#11 module"):
        open_rot(f"pkcs11:token=errors?module-path={not_a_module}")
    with pytest.raises(ConfigError, match="cannot read PIN file"):
        open_rot(f"pkcs11:token=errors?module-path={softhsm.module}&pin-source=file:{tmp_path}/x")
    with pytest.raises(ConfigError, match="module-name 'a/b' must be a bare name"):
        open_rot("pkcs11:token=errors?module-name=a%2Fb")
    assert open_rot(f"pkcs11:token=errors?module-name=libsofthsm2&pin-value={softhsm.pin}")


def test_pkcs11_unsupported_things_say_so(softhsm: SoftHsm) -> None:
    rot = open_rot(softhsm.uri("errors"))
    with pytest.raises(UnsupportedError, match="no settable monotonic counter"):
        rot.counter("rollback")
    assert rot.certify("any", b"nonce") is None
    with pytest.raises(ConfigError, match="random: ask for 0 to"):
        rot.random(1 << 20)


@pytest.mark.parametrize(
    ("library_error", "keyfab_class", "reason"),
    [
        (p11e.PinIncorrect, RotError, "wrong PIN"),
        (p11e.PinLocked, RotError, "the PIN is locked"),
        (p11e.NoSuchToken, KeyNotFoundError, "token not found"),
        (p11e.TokenNotPresent, KeyNotFoundError, "token not found"),
        (p11e.NoSuchKey, KeyNotFoundError, "object not found"),
        (p11e.DeviceMemory, RotError, "the token is full"),
        (p11e.TokenWriteProtected, RotLockedError, "write-protected"),
        (p11e.AttributeSensitive, KeyNotExportableError, "never leaves the token"),
        (p11e.MechanismInvalid, UnsupportedError, "does not support"),
        (p11e.DeviceError, RotError, "the PKCS#11 module failed (device error)"),
        (p11e.GeneralError, RotError, "the PKCS#11 module failed (general error)"),
    ],
)
def test_pkcs11_library_errors_map_to_one_line(
    library_error: type[p11e.PKCS11Error], keyfab_class: type[KeyfabError], reason: str
) -> None:
    mapped = translate(library_error(), "pkcs11 token 't': sign")
    assert type(mapped) is keyfab_class
    assert str(mapped).startswith("pkcs11 token 't': sign: ")
    assert reason in str(mapped)
    _one_clean_line(mapped)
    with pytest.raises(keyfab_class) as caught, translated("doing it"):
        raise library_error()
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
