"""The driver's reading of a TPMT_PUBLIC: object attributes and the public key.

The driver reads public areas the TPM itself just returned, to wrap keys as
``cryptography`` objects; the CA never relies on this reading (keyfab.attest
parses evidence independently and strictly). Decoding the few fields needed by
hand is ~20x cheaper than going through tpm2-pytss objects.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyfab.errors import RotError, UnsupportedError
from keyfab.rot.base import PublicKey

_ALG_RSA, _ALG_ECC, _ALG_NULL = 0x0001, 0x0023, 0x0010
_CURVES: dict[int, ec.EllipticCurve] = {0x0003: ec.SECP256R1(), 0x0004: ec.SECP384R1()}


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise RotError("tpm2: truncated public area from the TPM")
        self.at += n
        return self.data[self.at - n : self.at]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def sized(self) -> bytes:
        return self.take(self.u16())


def decode_public(data: bytes) -> tuple[int, PublicKey]:
    """(TPMA_OBJECT attributes, public key) of a marshalled TPMT_PUBLIC."""
    r = _Reader(data)
    kind, _name_alg = r.u16(), r.u16()
    (attributes,) = struct.unpack(">I", r.take(4))
    r.sized()  # authPolicy
    if r.u16() != _ALG_NULL:  # symmetric: keyBits, mode
        r.take(4)
    if r.u16() != _ALG_NULL:  # scheme: its hash
        r.take(2)
    try:
        if kind == _ALG_RSA:
            _bits, exponent = struct.unpack(">HI", r.take(6))
            modulus = int.from_bytes(r.sized(), "big")
            return attributes, rsa.RSAPublicNumbers(exponent or 65537, modulus).public_key()
        if kind == _ALG_ECC:
            curve = _CURVES.get(r.u16())
            if curve is None:
                raise UnsupportedError("tpm2: unsupported curve in a TPM key")
            if r.u16() != _ALG_NULL:  # kdf: its hash
                r.take(2)
            x, y = (int.from_bytes(r.sized(), "big") for _ in range(2))
            return attributes, ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except ValueError as error:
        raise RotError(f"tpm2: the TPM returned an invalid public key: {error}") from None
    raise UnsupportedError(f"tpm2: unsupported key type {kind:#06x}")
