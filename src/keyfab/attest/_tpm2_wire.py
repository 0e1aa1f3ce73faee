"""TPM 2.0 wire format models: TPMT_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE (Part 2).

Parsed here, on the verifier's side, with no TPM library: evidence comes from
a device the CA does not trust yet, so every length is checked against what is
left before it is used, unknown algorithms are refused, and every structure
must be consumed exactly. Errors are VerificationError with the field's name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from keyfab.errors import VerificationError

ALG_RSA, ALG_ECC, ALG_NULL = 0x0001, 0x0023, 0x0010
ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA = 0x0014, 0x0016, 0x0018
ALG_AES, ALG_CFB = 0x0006, 0x0043
HASH_SIZES = {0x000B: 32, 0x000C: 48, 0x000D: 64}  # SHA-256, SHA-384, SHA-512
HASH_NAMES = {0x000B: "sha256", 0x000C: "sha384", 0x000D: "sha512"}
CURVES = {0x0003: "secp256r1", 0x0004: "secp384r1"}

ATTEST_MAGIC = 0xFF544347  # TPM_GENERATED_VALUE
ST_ATTEST_CERTIFY = 0x8017
ST_ATTEST_QUOTE = 0x8018
_MAX_SIZED = 1024


_BIG = (struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q"))
_LITTLE = (struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q"))


class Reader:
    """Reads from an untrusted buffer; never past its end.

    TPM structures are big-endian; TCG event logs, written by UEFI firmware,
    are little-endian (``little_endian=True``). ``what`` starts every error
    message and may be narrowed while parsing (``event log: event 12``), so
    an error says where it is without the caller formatting every field name.
    """

    def __init__(self, data: bytes, what: str, *, little_endian: bool = False):
        self._data = data
        self._at = 0
        self.what = what
        self._u16, self._u32, self._u64 = _LITTLE if little_endian else _BIG

    @property
    def remaining(self) -> int:
        return len(self._data) - self._at

    def error(self, message: str) -> VerificationError:
        """``what: message``, for the caller to raise."""
        return VerificationError(f"{self.what}: {message}")

    def _advance(self, n: int, field: str) -> int:
        """Where ``n`` bytes of ``field`` start, checked against what is left."""
        if n > len(self._data) - self._at:
            raise self.error(f"{field} runs past the end")
        at = self._at
        self._at += n
        return at

    def take(self, n: int, field: str) -> bytes:
        at = self._advance(n, field)
        return self._data[at : at + n]

    def u8(self, field: str) -> int:
        return self._data[self._advance(1, field)]

    def unpack(self, layout: struct.Struct, field: str) -> tuple[Any, ...]:
        """Several fixed-size fields at once (one bounds check: parsers run hot)."""
        return layout.unpack_from(self._data, self._advance(layout.size, field))

    def u16(self, field: str) -> int:
        return int(self._u16.unpack_from(self._data, self._advance(2, field))[0])

    def u32(self, field: str) -> int:
        return int(self._u32.unpack_from(self._data, self._advance(4, field))[0])

    def u64(self, field: str) -> int:
        return int(self._u64.unpack_from(self._data, self._advance(8, field))[0])

    def sized(self, field: str, limit: int = _MAX_SIZED) -> bytes:
        """A TPM2B: 16-bit size, then that many bytes (at most ``limit``)."""
        size = self.u16(field)
        if size > limit:
            raise self.error(f"{field} is {size} bytes, more than {limit}")
        return self.take(size, field)

    def end(self) -> None:
        if self._at != len(self._data):
            raise self.error(f"{len(self._data) - self._at} trailing bytes")


def _hash_alg(reader: Reader, field: str) -> int:
    alg = reader.u16(field)
    if alg not in HASH_SIZES:
        raise VerificationError(f"unsupported hash algorithm {alg:#06x} in {field}")
    return alg


@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT: the EK's inner wrapping cipher (AES-CFB) or NULL."""

    algorithm: int
    key_bits: int = 0
    mode: int = 0


@dataclass(frozen=True)
class TpmPublic:
    """TPMT_PUBLIC: enough of it to check attributes, compute the Name and use the key."""

    raw: bytes
    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    symmetric: SymDef
    scheme: int
    curve: str | None
    rsa_bits: int
    rsa_exponent: int
    unique: tuple[bytes, ...]

    @property
    def name(self) -> bytes:
        """The TPM Name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        import hashlib

        digest = hashlib.new(HASH_NAMES[self.name_alg], self.raw).digest()
        return struct.pack(">H", self.name_alg) + digest


def parse_public(data: bytes) -> TpmPublic:
    r = Reader(data, "TPMT_PUBLIC")
    key_type = r.u16("type")
    name_alg = _hash_alg(r, "nameAlg")
    attributes = r.u32("objectAttributes")
    auth_policy = r.sized("authPolicy", 64)
    symmetric = _sym_def(r)
    scheme = r.u16("scheme")
    if scheme != ALG_NULL:
        _hash_alg(r, "scheme hash")
    curve: str | None = None
    bits = exponent = 0
    if key_type == ALG_RSA:
        bits, exponent = r.u16("keyBits"), r.u32("exponent")
        unique: tuple[bytes, ...] = (r.sized("unique.rsa", 512),)
    elif key_type == ALG_ECC:
        curve_id = r.u16("curveID")
        if curve_id not in CURVES:
            raise VerificationError(f"TPMT_PUBLIC: unsupported curve {curve_id:#06x}")
        curve = CURVES[curve_id]
        if r.u16("kdf") != ALG_NULL:
            _hash_alg(r, "kdf hash")
        unique = (r.sized("unique.x", 66), r.sized("unique.y", 66))
    else:
        raise VerificationError(f"TPMT_PUBLIC: unsupported key type {key_type:#06x}")
    r.end()
    return TpmPublic(
        data,
        key_type,
        name_alg,
        attributes,
        auth_policy,
        symmetric,
        scheme,
        curve,
        bits,
        exponent,
        unique,
    )


def _sym_def(r: Reader) -> SymDef:
    algorithm = r.u16("symmetric")
    if algorithm == ALG_NULL:
        return SymDef(ALG_NULL)
    if algorithm != ALG_AES:
        raise VerificationError(f"TPMT_PUBLIC: unsupported symmetric algorithm {algorithm:#06x}")
    return SymDef(algorithm, r.u16("symmetric keyBits"), r.u16("symmetric mode"))


@dataclass(frozen=True)
class PcrSelection:
    hash_alg: int
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class TpmAttest:
    """TPMS_ATTEST for TPM2_Certify (``name``) or TPM2_Quote (``pcr_select``, ``pcr_digest``)."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    name: bytes = b""
    qualified_name: bytes = b""
    pcr_select: tuple[PcrSelection, ...] = ()
    pcr_digest: bytes = b""


def parse_attest(data: bytes) -> TpmAttest:
    r = Reader(data, "TPMS_ATTEST")
    magic, kind = r.u32("magic"), r.u16("type")
    head = (magic, kind, r.sized("qualifiedSigner", 66), r.sized("extraData", 64))
    clock = (r.u64("clock"), r.u32("resetCount"), r.u32("restartCount"), bool(r.u8("safe")))
    firmware = r.u64("firmwareVersion")
    if kind == ST_ATTEST_CERTIFY:
        name, qualified = r.sized("certify.name", 66), r.sized("certify.qualifiedName", 66)
        r.end()
        return TpmAttest(*head, *clock, firmware, name=name, qualified_name=qualified)
    if kind == ST_ATTEST_QUOTE:
        selections = _pcr_selections(r)
        digest = r.sized("quote.pcrDigest", 64)
        r.end()
        return TpmAttest(*head, *clock, firmware, pcr_select=selections, pcr_digest=digest)
    raise VerificationError(f"TPMS_ATTEST: unsupported type {kind:#06x}")


def _pcr_selections(r: Reader) -> tuple[PcrSelection, ...]:
    count = r.u32("pcrSelect.count")
    if count > 16:
        raise VerificationError(f"TPMS_ATTEST: {count} PCR banks is too many")
    result = []
    for _ in range(count):
        alg = _hash_alg(r, "pcrSelect.hash")
        size = r.u8("sizeofSelect")
        if size > 8:
            raise VerificationError("TPMS_ATTEST: PCR bitmap longer than 8 bytes")
        bitmap = r.take(size, "pcrSelect")
        pcrs = tuple(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)
        result.append(PcrSelection(alg, pcrs))
    return tuple(result)


@dataclass(frozen=True)
class TpmSignature:
    """TPMT_SIGNATURE: ECDSA (r, s) or RSASSA/RSAPSS (one value)."""

    algorithm: int
    hash_alg: int
    values: tuple[bytes, ...]


def parse_signature(data: bytes) -> TpmSignature:
    r = Reader(data, "TPMT_SIGNATURE")
    algorithm = r.u16("sigAlg")
    if algorithm == ALG_ECDSA:
        hash_alg = _hash_alg(r, "hash")
        values: tuple[bytes, ...] = (r.sized("signatureR", 66), r.sized("signatureS", 66))
    elif algorithm in (ALG_RSASSA, ALG_RSAPSS):
        hash_alg = _hash_alg(r, "hash")
        values = (r.sized("sig", 512),)
    else:
        raise VerificationError(f"TPMT_SIGNATURE: unsupported algorithm {algorithm:#06x}")
    r.end()
    return TpmSignature(algorithm, hash_alg, values)
