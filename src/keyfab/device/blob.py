"""The locked-data blob: which device locked it, how, in which format version.

Layout (big-endian), at most ``MAX_BLOB`` bytes::

    magic    4   b"KFLK"
    version  1   1
    binding  1   1 soft AES-GCM key file, 2 PKCS#11 token AES-GCM, 3 TPM PolicyAuthorize seal
    device  32   SHA-256 of the root of trust's kind and unique id
    length   4   payload length
    payload      what the root of trust's ``seal()`` made

Magic, version, binding and device are the sealing context (AES-GCM
associated data), so a changed header is refused like a changed payload (the
length is checked against the blob's size). The parser
checks the size first and every field before it reads the next.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

from keyfab.errors import VerificationError
from keyfab.rot.base import MAX_SEALED, RotInfo

MAGIC = b"KFLK"
VERSION = 1
_HEADER = struct.Struct(">4sBB32sI")
MAX_PAYLOAD = MAX_SEALED + 4096
"""Sealed data plus the largest overhead a driver adds (a TPM sealed object, a tag)."""
MAX_BLOB = _HEADER.size + MAX_PAYLOAD


class Binding(enum.IntEnum):
    """How a blob's payload is bound to its device."""

    SOFT = 1
    PKCS11 = 2
    TPM2 = 3

    @classmethod
    def of(cls, kind: str) -> Binding:
        """The binding a root-of-trust driver makes; VerificationError for none."""
        try:
            return cls[kind.upper()]
        except KeyError:
            raise VerificationError(f"a {kind} root of trust cannot lock data") from None


def device_id(info: RotInfo) -> bytes:
    """A root of trust's fixed-size id in blobs: its kind and unique id, hashed."""
    return hashlib.sha256(f"{info.kind}:{info.unique_id}".encode()).digest()


@dataclass(frozen=True)
class Blob:
    binding: Binding
    device: bytes
    payload: bytes

    @property
    def context(self) -> bytes:
        return context(self.binding, self.device)

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD:
            raise VerificationError(f"locked payload is larger than {MAX_PAYLOAD} bytes")
        return _HEADER.pack(MAGIC, VERSION, self.binding, self.device, len(self.payload)) + (
            self.payload
        )


def context(binding: Binding, device: bytes) -> bytes:
    """What a blob's payload is sealed against: its header without the length."""
    return _HEADER.pack(MAGIC, VERSION, binding, device, 0)[:-4]


def decode(data: bytes) -> Blob:
    """A blob from untrusted bytes, or VerificationError with one line saying why."""
    if len(data) > MAX_BLOB:
        raise VerificationError(f"locked blob is larger than {MAX_BLOB} bytes")
    if len(data) < _HEADER.size:
        raise VerificationError("not a keyfab locked blob (too short)")
    magic, version, binding, device, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise VerificationError("not a keyfab locked blob")
    if version != VERSION:
        raise VerificationError(f"locked blob version {version} is not supported (only {VERSION})")
    if binding not in Binding.__members__.values():
        raise VerificationError(f"locked blob names unknown binding {binding}")
    if length != len(data) - _HEADER.size:
        raise VerificationError("locked blob is truncated or has trailing bytes")
    return Blob(Binding(binding), device, data[_HEADER.size :])
