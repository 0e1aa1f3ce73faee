"""The connection to one TPM: TCTI, ESAPI context, handle hygiene, error translation.

A TPM without a resource manager (swtpm, a bare ``/dev/tpm0``) has only a few
transient object slots (swtpm: 3) and keeps whatever a crashed client left
loaded. So the connection flushes leftovers when it opens, every transient
object lives inside ``transient()`` which flushes it on the way out, and
``transient_count()`` lets tests prove that nothing leaks.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
from tpm2_pytss.constants import ESYS_TR, TPM2_CAP

from keyfab.errors import KeyNotFoundError, RotError
from keyfab.rot._tpm2_config import Tcti

_T = TypeVar("_T")

# Handle ranges (TPM 2.0 Part 2, TPM_HT): transient objects, loaded and saved sessions.
_TRANSIENT = 0x80000000
_SESSION_RANGES = (0x02000000, 0x03000000)
_CC_FLUSH_CONTEXT = 0x00000165
_ST_NO_SESSIONS = 0x8001
_MAX_HANDLES = 64
# TPM_RC_HANDLE, a format-one code (bit 7) whose bits 6 and 8-11 say which handle.
_RC_HANDLE = 0x08B
_RC_FMT1_MASK = 0xFFFF00BF  # keep the TSS layer, format bit and error number


def is_missing_handle(rc: int) -> bool:
    """True for the TPM's TPM_RC_HANDLE: the key or NV index asked for does not exist."""
    return (rc & _RC_FMT1_MASK) == _RC_HANDLE


class TpmConnection:
    """One open TCTI + ESAPI context. Not thread-safe: one per device, as TPMs are."""

    def __init__(self, tcti: Tcti):
        self.tcti_spec = tcti
        try:
            self._tcti = TCTILdr(tcti.name, tcti.conf)
        except (TSS2_Exception, RuntimeError, OSError) as error:
            raise RotError(f"tpm2: cannot open TCTI {tcti}: {error}") from None
        self.flush_leftovers()
        try:
            self.esys = ESAPI(self._tcti)
        except TSS2_Exception as error:
            self._tcti.finalize()
            raise RotError(f"tpm2: cannot start ESAPI on {tcti}: {error}") from None

    def call(self, what: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run an ESAPI call; a TSS error becomes one RotError line naming the command."""
        try:
            return function(*args, **kwargs)
        except TSS2_Exception as error:
            if is_missing_handle(int(error.rc)):
                raise KeyNotFoundError(f"tpm2: {what}: no such handle") from None
            raise RotError(f"tpm2: {what} failed: {error}") from None

    def handles(self, first: int) -> list[int]:
        """TPM handles currently in the range that starts at ``first``."""
        _, data = self.call(
            "GetCapability", self.esys.get_capability, TPM2_CAP.HANDLES, first, _MAX_HANDLES
        )
        return [int(h) for h in data.data.handles if (int(h) >> 24) == (first >> 24)]

    def transient_count(self) -> int:
        """How many transient objects are loaded: zero between operations."""
        return len(self.handles(_TRANSIENT))

    @contextmanager
    def transient(self, handle: ESYS_TR) -> Iterator[ESYS_TR]:
        """Yield a freshly loaded object and flush it however the block ends."""
        try:
            yield handle
        finally:
            self.esys.flush_context(handle)

    def flush_leftovers(self) -> None:
        """Flush transient objects and sessions a crashed client left behind.

        Done with raw TPM2_FlushContext commands on the TCTI, before ESAPI is
        started, because ESAPI can only flush what it created itself. Behind a
        resource manager (``/dev/tpmrm0``) this sees only our own handles.
        """
        for first in (_TRANSIENT, *_SESSION_RANGES):
            for handle in self._raw_handles(first):
                self.transact(struct.pack(">HIII", _ST_NO_SESSIONS, 14, _CC_FLUSH_CONTEXT, handle))

    def _raw_handles(self, first: int) -> list[int]:
        command = struct.pack(
            ">HIIIII", _ST_NO_SESSIONS, 22, 0x17A, int(TPM2_CAP.HANDLES), first, _MAX_HANDLES
        )
        response = self.transact(command)
        # header(10) moreData(1) capability(4) count(4) handles(4 each)
        if len(response) < 19:
            return []
        (count,) = struct.unpack_from(">I", response, 15)
        count = min(count, (len(response) - 19) // 4)
        handles = struct.unpack_from(f">{count}I", response, 19)
        return [h for h in handles if (h >> 24) == (first >> 24)]

    def transact(self, command: bytes) -> bytes:
        """Send one marshalled command straight to the TPM and return its response."""
        try:
            self._tcti.transmit(command)
            response: bytes = bytes(self._tcti.receive())
        except TSS2_Exception as error:
            raise RotError(f"tpm2: cannot talk to the TPM on {self.tcti_spec}: {error}") from None
        return response

    def close(self) -> None:
        """Close ESAPI and the TCTI; safe to call twice."""
        esys = getattr(self, "esys", None)
        if esys is not None:
            esys.close()
            self.esys = None
        if self._tcti is not None:
            self._tcti.finalize()
            self._tcti = None


PASSWORD = ESYS_TR.PASSWORD
