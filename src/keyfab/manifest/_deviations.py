"""Encoding deviations found in real secure-element certificates, and the ones keyfab tolerates.

Some vendors' device certificates are not strictly DER. pyca/cryptography's
path verifier refuses them outright, so a reel of real parts would fail on
encoding alone. keyfab tolerates exactly the deviations listed in ``TOLERATED``,
each seen in shipping parts, and nothing else: it finds them by walking the
certificate's own bytes (not by matching an error message), and for the path
check it reads a *normalised* copy in which each deviation is rewritten to its
strict equivalent of the same length. Signatures are always verified over the
original bytes; validity, CA constraints and key usage are checked as strictly
as for any certificate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from keyfab.errors import VerificationError

_PRINTABLE = re.compile(rb"[A-Za-z0-9 '()+,\-./:=?]*")
_PRINTABLE_STRING, _UTF8_STRING, _OCTET_STRING = 0x13, 0x0C, 0x04
_GENERALIZED_TIME = 0x18
_MAX_DEPTH = 24


@dataclass(frozen=True)
class Deviation:
    """One kind of non-DER encoding: its stable name, what it is, where it was seen."""

    name: str
    description: str
    seen_in: str


PRINTABLE_STRING_ALPHABET = Deviation(
    "printable-string-alphabet",
    "a PrintableString holding characters outside its alphabet (X.680 §41.4), "
    "e.g. '_' or '@' in a subjectAltName directoryName serialNumber; read as UTF8String",
    "Microchip Trust&Go (ATECC608) device certificates",
)
GENERALIZED_TIME_BEFORE_2050 = Deviation(
    "generalized-time-before-2050",
    "a validity date before 2050 encoded as GeneralizedTime (RFC 5280 §4.1.2.5 asks UTCTime)",
    "Microchip compressed device certificates (expiry 2048)",
)
TOLERATED = (PRINTABLE_STRING_ALPHABET, GENERALIZED_TIME_BEFORE_2050)


@dataclass(frozen=True)
class Normalised:
    """A certificate read through its tolerated deviations."""

    original: x509.Certificate
    strict: x509.Certificate  # same content, deviations rewritten: for reading extensions
    deviations: tuple[Deviation, ...]


def names(deviations: set[Deviation] | tuple[Deviation, ...]) -> str:
    """The deviations' names, in TOLERATED order, for messages."""
    return ", ".join(d.name for d in TOLERATED if d in deviations)


def _header(data: bytes | bytearray, offset: int, end: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the TLV at ``offset``; DER lengths only."""
    if offset + 2 > end:
        raise ValueError("truncated")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte tags are not used in certificates")
    if first < 0x80:
        start, length = offset + 2, first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or offset + 2 + count > end:
            raise ValueError("bad length")
        start, length = offset + 2 + count, int.from_bytes(data[offset + 2 : offset + 2 + count])
    if start + length > end:
        raise ValueError("length beyond the data")
    return tag, start, start + length


def _year(digits: bytearray) -> int:
    if not digits.isdigit():
        raise ValueError("a GeneralizedTime that does not start with a year")
    return int(digits)


def _walk(data: bytearray, start: int, end: int, depth: int, found: set[Deviation]) -> None:
    """Visit every element in ``data[start:end]``, rewriting tolerated deviations in place."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    offset = start
    while offset < end:
        tag, content, after = _header(data, offset, end)
        if tag & 0x20:  # constructed: SEQUENCE, SET, [n] EXPLICIT
            _walk(data, content, after, depth + 1, found)
        elif tag == _PRINTABLE_STRING and not _PRINTABLE.fullmatch(bytes(data[content:after])):
            data[offset] = _UTF8_STRING
            found.add(PRINTABLE_STRING_ALPHABET)
        elif tag == _GENERALIZED_TIME and _year(data[content : content + 4]) < 2050:
            found.add(GENERALIZED_TIME_BEFORE_2050)
        elif tag == _OCTET_STRING and after > content and data[content] == 0x30:
            _walk_inner(data, content, after, depth + 1, found)
        offset = after


def _walk_inner(data: bytearray, start: int, end: int, depth: int, found: set[Deviation]) -> None:
    """An extension's value is DER inside an OCTET STRING: walk it if it parses whole.

    A copy is walked first, so an OCTET STRING that only looks like DER (a key
    identifier starting with 0x30) is left exactly as it was.
    """
    inner, seen = bytearray(data[start:end]), set[Deviation]()
    try:
        _walk(inner, 0, len(inner), depth, seen)
    except ValueError:
        return
    data[start:end] = inner
    found |= seen


def normalise(certificate: x509.Certificate) -> Normalised:
    """The certificate, its tolerated deviations, and a strict copy to read them through."""
    der = bytearray(certificate.public_bytes(Encoding.DER))
    found: set[Deviation] = set()
    try:
        _walk(der, 0, len(der), 0, found)
        strict = x509.load_der_x509_certificate(bytes(der)) if found else certificate
    except ValueError as error:
        raise VerificationError(f"device certificate: not DER keyfab can read: {error}") from None
    ordered = tuple(deviation for deviation in TOLERATED if deviation in found)
    return Normalised(certificate, strict, ordered)
