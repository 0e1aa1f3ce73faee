"""The little DER keyfab writes and reads itself: RFC 4108 hardwareModuleName.

``cryptography`` takes an otherName's value as raw DER, so the SEQUENCE
{hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING} is encoded here.
"""

from __future__ import annotations

import functools

from cryptography import x509

from keyfab.errors import PkiError

HARDWARE_MODULE_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4")

_OID, _OCTET_STRING, _SEQUENCE = 0x06, 0x04, 0x30


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


@functools.lru_cache(maxsize=64)
def _oid_body(dotted: str) -> bytes:
    """DER body of an OID; cached, since a batch encodes its product's hwType per device."""
    arcs = [int(arc) for arc in dotted.split(".")]
    out = bytearray(_base128(40 * arcs[0] + arcs[1]))
    for arc in arcs[2:]:
        out += _base128(arc)
    return bytes(out)


def _base128(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def hardware_module_name(hw_type: str, serial: bytes) -> x509.OtherName:
    """The SAN entry IEEE 802.1AR puts in an IDevID (RFC 4108 section 5)."""
    value = _tlv(_SEQUENCE, _tlv(_OID, _oid_body(hw_type)) + _tlv(_OCTET_STRING, serial))
    return x509.OtherName(HARDWARE_MODULE_NAME, value)


def _read(data: bytes, offset: int, tag: int) -> tuple[bytes, int]:
    """One TLV of ``tag`` at ``offset``: its value and the offset after it."""
    if offset + 2 > len(data) or data[offset] != tag:
        raise PkiError("malformed hardwareModuleName")
    length, offset = data[offset + 1], offset + 2
    if length & 0x80:
        size = length & 0x7F
        if size == 0 or size > 4 or offset + size > len(data):
            raise PkiError("malformed hardwareModuleName length")
        length, offset = int.from_bytes(data[offset : offset + size], "big"), offset + size
    if offset + length > len(data):
        raise PkiError("hardwareModuleName runs past its end")
    return data[offset : offset + length], offset + length


def parse_hardware_module_name(name: x509.OtherName) -> tuple[str, bytes]:
    """(hwType dotted OID, hwSerialNum) from an otherName made by any issuer."""
    if name.type_id != HARDWARE_MODULE_NAME:
        raise PkiError("otherName is not a hardwareModuleName")
    body, end = _read(name.value, 0, _SEQUENCE)
    if end != len(name.value):
        raise PkiError("trailing bytes after hardwareModuleName")
    oid, offset = _read(body, 0, _OID)
    serial, offset = _read(body, offset, _OCTET_STRING)
    if offset != len(body) or not oid:
        raise PkiError("malformed hardwareModuleName")
    return _oid_text(oid), serial


def _oid_text(body: bytes) -> str:
    arcs: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if body[-1] & 0x80:
        raise PkiError("malformed object identifier")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])
