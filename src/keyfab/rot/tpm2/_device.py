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
from keyfab.rot.tpm2._config import Tcti
from keyfab.rot.tpm2._raw import ST_NO_SESSIONS, command, flush, is_missing_handle, run

_T = TypeVar("_T")

# Handle ranges (TPM 2.0 Part 2, TPM_HT): transient objects, loaded and saved sessions.
_TRANSIENT = 0x80000000
_SESSION_RANGES = (0x02000000, 0x03000000)
_CC_GET_CAPABILITY = 0x17A
_MAX_HANDLES = 64


class TpmConnection:
    """One open TCTI + ESAPI context. Not thread-safe: one per device, as TPMs are."""

    def __init__(self, tcti: Tcti):
        self.tcti_spec = tcti
        try:
            self._tcti = TCTILdr(tcti.name, tcti.conf)
        except (TSS2_Exception, RuntimeError, OSError) as error:
            raise RotError(f"tpm2: cannot open TCTI {tcti}: {error}") from None
        self._esys: Any = None
        self.flush_leftovers()

    @property
    def esys(self) -> Any:
        """The ESAPI context, started on first use: the per-device path needs none."""
        if self._esys is None:
            try:
                self._esys = ESAPI(self._tcti)
            except TSS2_Exception as error:
                raise RotError(f"tpm2: cannot start ESAPI on {self.tcti_spec}: {error}") from None
        return self._esys

    def call(self, what: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run an ESAPI call; a TSS error becomes one RotError line naming the command."""
        try:
            return function(*args, **kwargs)
        except TSS2_Exception as error:
            if is_missing_handle(int(error.rc)):
                raise KeyNotFoundError(f"tpm2: {what}: no such handle") from None
            raise RotError(f"tpm2: {what} failed: {error}") from None

    def properties(self, first: int, count: int) -> list[int]:
        """Values of ``count`` TPM properties from ``first`` (TPM2_GetCapability)."""
        body = self._capability(int(TPM2_CAP.TPM_PROPERTIES), first, count)
        values = struct.unpack_from(f">{2 * len(body) // 8}I", body)
        return list(values[1::2])

    def _capability(self, capability: int, first: int, count: int) -> bytes:
        """The list part of TPM2_GetCapability's answer: ``n`` items of 4 or 8 bytes."""
        params = struct.pack(">III", capability, first, count)
        request = command(ST_NO_SESSIONS, _CC_GET_CAPABILITY, b"", b"", params)
        body = run(self.transact, "GetCapability", request)
        # moreData(1) capability(4) count(4) items
        if len(body) < 9:
            raise RotError("tpm2: GetCapability: truncated response")
        (n,) = struct.unpack_from(">I", body, 5)
        size = 8 if capability == int(TPM2_CAP.TPM_PROPERTIES) else 4
        if 9 + size * n > len(body):
            raise RotError("tpm2: GetCapability: truncated response")
        return body[9 : 9 + size * n]

    def handles(self, first: int) -> list[int]:
        """TPM handles currently in the range that starts at ``first`` (TPM2_GetCapability)."""
        body = self._capability(int(TPM2_CAP.HANDLES), first, _MAX_HANDLES)
        handles = struct.unpack_from(f">{len(body) // 4}I", body)
        return [h for h in handles if (h >> 24) == (first >> 24)]

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
            for handle in self.handles(first):
                flush(self.transact, handle)

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
        if self._esys is not None:
            self._esys.close()
            self._esys = None
        if self._tcti is not None:
            self._tcti.finalize()
            self._tcti = None


PASSWORD = ESYS_TR.PASSWORD
