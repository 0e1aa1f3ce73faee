"""What a token hands back is parsed defensively: bad bytes are one RotError."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from keyfab.errors import RotError, UnsupportedError
from keyfab.rot.pkcs11._keys import ec_public_key, rsa_public_key
from keyfab.rot.pkcs11._objects import _der_integer, certificates_in

P256 = bytes.fromhex("06082a8648ce3d030107")
P384 = bytes.fromhex("06052b81040022")


@pytest.mark.parametrize(("params", "curve"), [(P256, ec.SECP256R1()), (P384, ec.SECP384R1())])
def test_pkcs11_ec_point_with_and_without_octet_string(
    params: bytes, curve: ec.EllipticCurve
) -> None:
    key = ec.generate_private_key(curve).public_key()
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert ec_public_key(params, point) == key
    assert ec_public_key(params, bytes([0x04, len(point)]) + point) == key


@given(st.binary(max_size=200))
def test_pkcs11_ec_point_garbage_is_one_error(point: bytes) -> None:
    try:
        key = ec_public_key(P256, point)
    except RotError as error:
        message = str(error)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return
    assert "EC point" in message


def test_pkcs11_unknown_curve_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="curve keyfab does not use"):
        ec_public_key(bytes.fromhex("06052b8104000a"), b"\x04" + bytes(64))  # secp256k1


@given(st.binary(max_size=600), st.binary(max_size=12))
def test_pkcs11_rsa_garbage_is_one_error(modulus: bytes, exponent: bytes) -> None:
    try:
        key = rsa_public_key(modulus, exponent)
    except RotError:
        pass
    else:
        assert isinstance(key, rsa.RSAPublicKey)


@given(st.binary(max_size=3000))
def test_pkcs11_certificate_detection_never_raises(data: bytes) -> None:
    assert certificates_in(data) == []  # random bytes: no certificate, and no exception


@given(st.integers(min_value=1, max_value=(1 << 159) - 1))
def test_pkcs11_serial_number_is_der_integer(value: int) -> None:
    encoded = _der_integer(value)
    assert encoded[0] == 0x02
    assert encoded[1] == len(encoded) - 2
    assert int.from_bytes(encoded[2:], "big", signed=True) == value
    assert not (len(encoded) > 3 and encoded[2] == 0 and encoded[3] < 0x80)  # minimal
