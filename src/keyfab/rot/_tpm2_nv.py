"""Data objects and monotonic counters in TPM NV indices.

An object is stored as its raw bytes, so ``tpm2_nvread`` returns exactly the
certificate keyfab wrote. Indices are owner-authorised (empty owner auth, as
during manufacturing) and readable with the index's own (empty) auth too.
WRITEDEFINE lets ``lock()`` freeze an object with TPM2_NV_WriteLock.
Counters are TPM_NT_COUNTER indices: the TPM itself refuses to lower them.
"""

from __future__ import annotations

from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_NT, TPMA_NV
from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

from keyfab.errors import ConfigError, KeyNotFoundError, RotError, UnsupportedError
from keyfab.rot._tpm2_device import TpmConnection
from keyfab.rot._tpm2_ek import read_nv

MAX_OBJECT = 2048
_CHUNK = 1024
_MAX_COUNTER_STEPS = 4096
_ACCESS = (
    TPMA_NV.OWNERWRITE | TPMA_NV.OWNERREAD | TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.NO_DA
)


def _public(index: int, size: int, kind: int, extra: int = 0) -> TPM2B_NV_PUBLIC:
    attributes = _ACCESS | extra | (kind << TPMA_NV.TPM2_NT_SHIFT)
    return TPM2B_NV_PUBLIC(
        nvPublic=TPMS_NV_PUBLIC(
            nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=attributes, dataSize=size
        )
    )


def exists(tpm: TpmConnection, index: int) -> bool:
    return index in tpm.handles(index & 0xFFFF0000)


def undefine(tpm: TpmConnection, index: int) -> None:
    handle = tpm.call(f"NV {index:#010x}", tpm.esys.tr_from_tpmpublic, index)
    tpm.call(f"NV_UndefineSpace {index:#010x}", tpm.esys.nv_undefine_space, handle, ESYS_TR.OWNER)


def write_object(tpm: TpmConnection, index: int, data: bytes) -> None:
    """Define an index of exactly ``len(data)`` bytes (replacing any old one) and fill it."""
    if not 0 < len(data) <= MAX_OBJECT:
        raise UnsupportedError(f"tpm2: objects must be 1 to {MAX_OBJECT} bytes, not {len(data)}")
    if exists(tpm, index):
        undefine(tpm, index)
    public = _public(index, len(data), TPM2_NT.ORDINARY, TPMA_NV.WRITEDEFINE)
    handle = tpm.call(
        f"NV_DefineSpace {index:#010x}", tpm.esys.nv_define_space, None, public, ESYS_TR.OWNER
    )
    try:
        for offset in range(0, len(data), _CHUNK):
            chunk = data[offset : offset + _CHUNK]
            tpm.call(
                f"NV_Write {index:#010x}", tpm.esys.nv_write, handle, chunk, offset, ESYS_TR.OWNER
            )
    finally:
        tpm.esys.tr_close(handle)


def read_object(tpm: TpmConnection, index: int, label: str) -> bytes:
    try:
        return read_nv(tpm, index, MAX_OBJECT)
    except KeyNotFoundError:
        raise KeyNotFoundError(f"tpm2: no object {label!r} (NV {index:#010x})") from None


def write_lock(tpm: TpmConnection, index: int) -> None:
    """Refuse further writes to ``index`` until it is undefined (TPM2_NV_WriteLock)."""
    handle = tpm.call(f"NV {index:#010x}", tpm.esys.tr_from_tpmpublic, index)
    try:
        tpm.call(f"NV_WriteLock {index:#010x}", tpm.esys.nv_write_lock, handle, ESYS_TR.OWNER)
    finally:
        tpm.esys.tr_close(handle)


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
            public = _public(index, 8, TPM2_NT.COUNTER)
            handle = tpm.call(
                f"NV_DefineSpace {index:#010x}", tpm.esys.nv_define_space, None, public
            )
            tpm.esys.tr_close(handle)
            self._increment()

    def _increment(self) -> None:
        handle = self._tpm.call(
            f"NV {self._index:#010x}", self._tpm.esys.tr_from_tpmpublic, self._index
        )
        try:
            self._tpm.call("NV_Increment", self._tpm.esys.nv_increment, handle, ESYS_TR.OWNER)
        finally:
            self._tpm.esys.tr_close(handle)

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
