"""Data objects and monotonic counters in TPM NV indices, as raw TPM commands.

An object is stored as its raw bytes, so ``tpm2_nvread`` returns exactly the
certificate keyfab wrote. Indices are owner-authorised (empty owner auth, as
during manufacturing) and readable with the index's own (empty) auth too.
WRITEDEFINE lets ``lock()`` freeze an object with TPM2_NV_WriteLock.
Counters are TPM_NT_COUNTER indices: the TPM itself refuses to lower them.
Raw commands rather than ESAPI for the reason given in keyfab.rot.tpm2._raw.
"""

from __future__ import annotations

import struct

from keyfab.errors import ConfigError, KeyNotFoundError, RotError, UnsupportedError
from keyfab.rot.tpm2._device import TpmConnection
from keyfab.rot.tpm2._raw import (
    PASSWORD_AUTH,
    RH_OWNER,
    ST_NO_SESSIONS,
    ST_SESSIONS,
    b,
    command,
    parameters,
    run,
    sized,
)

MAX_OBJECT = 2048
_CHUNK = 1024
_MAX_COUNTER_STEPS = 4096
_CC_NV_DEFINE, _CC_NV_UNDEFINE, _CC_NV_WRITE, _CC_NV_READ = 0x12A, 0x122, 0x137, 0x14E
_CC_NV_READ_PUBLIC, _CC_NV_WRITE_LOCK, _CC_NV_INCREMENT = 0x169, 0x138, 0x134
_ALG_SHA256 = 0x000B
# TPMA_NV: OWNERWRITE, AUTHWRITE, WRITEDEFINE, OWNERREAD, AUTHREAD, NO_DA; TPM_NT in bits 4-7
_OWNERWRITE, _AUTHWRITE, _WRITEDEFINE = 0x00000002, 0x00000004, 0x00002000
_OWNERREAD, _AUTHREAD, _NO_DA = 0x00020000, 0x00040000, 0x02000000
_ACCESS = _OWNERWRITE | _AUTHWRITE | _OWNERREAD | _AUTHREAD | _NO_DA
_NT_ORDINARY, _NT_COUNTER = 0x0, 0x1


def exists(tpm: TpmConnection, index: int) -> bool:
    return index in tpm.handles(index & 0xFFFF0000)


def _owner_command(tpm: TpmConnection, code: int, index: int, params: bytes, what: str) -> bytes:
    """A command on NV ``index`` authorised by the (empty) owner password."""
    handles = struct.pack(">II", RH_OWNER, index)
    request = command(ST_SESSIONS, code, handles, PASSWORD_AUTH, params)
    return run(tpm.transact, f"{what} {index:#010x}", request)


def _define(tpm: TpmConnection, index: int, size: int, kind: int, extra: int = 0) -> None:
    attributes = _ACCESS | extra | kind << 4
    public = struct.pack(">IHI", index, _ALG_SHA256, attributes) + b(b"") + struct.pack(">H", size)
    handles = struct.pack(">I", RH_OWNER)
    request = command(ST_SESSIONS, _CC_NV_DEFINE, handles, PASSWORD_AUTH, b(b"") + b(public))
    run(tpm.transact, f"NV_DefineSpace {index:#010x}", request)


def undefine(tpm: TpmConnection, index: int) -> None:
    _owner_command(tpm, _CC_NV_UNDEFINE, index, b"", "NV_UndefineSpace")


def data_size(tpm: TpmConnection, index: int) -> int:
    """The size of NV ``index`` from TPM2_NV_ReadPublic; KeyNotFoundError if undefined."""
    request = command(ST_NO_SESSIONS, _CC_NV_READ_PUBLIC, struct.pack(">I", index), b"", b"")
    public, _ = sized(run(tpm.transact, f"NV_ReadPublic {index:#010x}", request), 0, "NV")
    # nvIndex(4) nameAlg(2) attributes(4) authPolicy(TPM2B) dataSize(2)
    _, at = sized(public, 10, "NV_ReadPublic")
    if at + 2 != len(public):
        raise RotError(f"tpm2: NV_ReadPublic {index:#010x}: malformed public area")
    return int.from_bytes(public[at:], "big")


def read_nv(tpm: TpmConnection, index: int, limit: int) -> bytes:
    """The whole content of an NV index (read with its own auth), in chunks."""
    size = data_size(tpm, index)
    if size > limit:
        raise RotError(f"tpm2: NV {index:#010x} holds {size} bytes, more than {limit}")
    data = bytearray()
    handles = struct.pack(">II", index, index)
    while len(data) < size:
        params = struct.pack(">HH", min(_CHUNK, size - len(data)), len(data))
        request = command(ST_SESSIONS, _CC_NV_READ, handles, PASSWORD_AUTH, params)
        body = run(tpm.transact, f"NV_Read {index:#010x}", request)
        chunk, _ = sized(parameters(body, 0, "NV_Read"), 0, "NV_Read")
        if not chunk:
            raise RotError(f"tpm2: NV_Read {index:#010x} returned nothing")
        data += chunk
    return bytes(data[:size])


def write_object(tpm: TpmConnection, index: int, data: bytes) -> None:
    """Define an index of exactly ``len(data)`` bytes (replacing any old one) and fill it."""
    if not 0 < len(data) <= MAX_OBJECT:
        raise UnsupportedError(f"tpm2: objects must be 1 to {MAX_OBJECT} bytes, not {len(data)}")
    if exists(tpm, index):
        undefine(tpm, index)
    _define(tpm, index, len(data), _NT_ORDINARY, _WRITEDEFINE)
    for offset in range(0, len(data), _CHUNK):
        params = b(data[offset : offset + _CHUNK]) + struct.pack(">H", offset)
        _owner_command(tpm, _CC_NV_WRITE, index, params, "NV_Write")


def read_object(tpm: TpmConnection, index: int, label: str) -> bytes:
    try:
        return read_nv(tpm, index, MAX_OBJECT)
    except KeyNotFoundError:
        raise KeyNotFoundError(f"tpm2: no object {label!r} (NV {index:#010x})") from None


def write_lock(tpm: TpmConnection, index: int) -> None:
    """Refuse further writes to ``index`` until it is undefined (TPM2_NV_WriteLock)."""
    _owner_command(tpm, _CC_NV_WRITE_LOCK, index, b"", "NV_WriteLock")


class NvCounter:
    """A monotonic counter backed by a TPM_NT_COUNTER index.

    A TPM counter starts, on its first increment, at the highest value any
    counter of that TPM ever had, not at zero; keyfab reports the raw value so
    that anti-rollback comparisons see what the TPM enforces.
    """

    def __init__(self, tpm: TpmConnection, name: str, index: int):
        self.name = name
        self._tpm = tpm
        self._index = index
        if not exists(tpm, index):
            _define(tpm, index, 8, _NT_COUNTER)
            self._increment()

    def _increment(self) -> None:
        _owner_command(self._tpm, _CC_NV_INCREMENT, self._index, b"", "NV_Increment")

    def read(self) -> int:
        return int.from_bytes(read_nv(self._tpm, self._index, 8), "big")

    def advance_to(self, value: int) -> int:
        current = self.read()
        if value <= current:
            return current
        if value - current > _MAX_COUNTER_STEPS:
            raise ConfigError(
                f"counter {self.name!r}: a TPM counter moves one step per command; "
                f"{value - current} steps is more than {_MAX_COUNTER_STEPS}"
            )
        for _ in range(value - current):
            self._increment()
        new = self.read()
        if new < value:
            raise RotError(f"counter {self.name!r} did not advance")
        return new
