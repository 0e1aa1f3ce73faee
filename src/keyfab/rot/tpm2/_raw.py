"""Raw TPM 2.0 commands: framing, password and policy sessions (TPM 2.0 Part 1/3).

Why not ESAPI for everything: tpm2-tss 3.x with OpenSSL 3 creates and frees a
whole OpenSSL library context for every caller nonce it makes
(esys_crypto_ossl.c), about 3 ms each here, and ESAPI's generic object
bookkeeping costs ~0.5-1 ms a command more; swtpm answers most commands in
well under 1 ms. The per-device hot path (make a key, persist it, sign,
certify, activate a credential) therefore builds its commands here, on
persistent handles only, so ESAPI's view of the TPM stays true. Responses are
size-checked before use; a TPM error is one RotError line with its code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from keyfab.errors import KeyNotFoundError, RotError

ST_NO_SESSIONS, ST_SESSIONS = 0x8001, 0x8002
RH_OWNER, RH_NULL, RH_ENDORSEMENT, RS_PW = 0x40000001, 0x40000007, 0x4000000B, 0x40000009
PASSWORD_AUTH = struct.pack(">IHBH", RS_PW, 0, 0, 0)  # empty password, no attributes
_CC_FLUSH_CONTEXT = 0x165
_HEADER = 10
# TPM_RC_HANDLE, a format-one code (bit 7) whose bits 6 and 8-11 say which handle.
_RC_HANDLE = 0x08B
_RC_FMT1_MASK = 0xFFFF00BF

# TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING: "send the same command again"
# (swtpm answers RETRY right after writing its NV state, as ESAPI knows too).
_TRY_AGAIN = frozenset({0x922, 0x908, 0x90A})
_MAX_RETRIES = 16

Transport = Callable[[bytes], bytes]


def is_missing_handle(rc: int) -> bool:
    """True for the TPM's TPM_RC_HANDLE: the key or NV index asked for does not exist."""
    return (rc & _RC_FMT1_MASK) == _RC_HANDLE


def b(data: bytes) -> bytes:
    """A TPM2B: 16-bit size, then the bytes."""
    return struct.pack(">H", len(data)) + data


def command(tag: int, code: int, handles: bytes, auths: bytes, params: bytes) -> bytes:
    body = handles + (struct.pack(">I", len(auths)) + auths if tag == ST_SESSIONS else b"")
    body += params
    return struct.pack(">HII", tag, _HEADER + len(body), code) + body


def run(transport: Transport, what: str, request: bytes) -> bytes:
    """Send ``request``; return the response after its header, or raise with the TPM's code."""
    for _ in range(_MAX_RETRIES):
        response = transport(request)
        if len(response) < _HEADER:
            raise RotError(f"tpm2: {what}: short response from the TPM")
        _, size, rc = struct.unpack_from(">HII", response)
        if rc not in _TRY_AGAIN:
            break
    if rc != 0:
        if is_missing_handle(rc):
            raise KeyNotFoundError(f"tpm2: {what}: no such handle")
        raise RotError(f"tpm2: {what} failed: TPM response code {rc:#x}")
    if size != len(response):
        raise RotError(f"tpm2: {what}: response size mismatch")
    return response[_HEADER:]


def parameters(body: bytes, handles: int, what: str) -> bytes:
    """The response parameters of a command sent with sessions (after ``handles`` handles)."""
    at = 4 * handles
    if len(body) < at + 4:
        raise RotError(f"tpm2: {what}: truncated response")
    (size,) = struct.unpack_from(">I", body, at)
    if at + 4 + size > len(body):
        raise RotError(f"tpm2: {what}: truncated response")
    return body[at + 4 : at + 4 + size]


def sized(data: bytes, at: int, what: str) -> tuple[bytes, int]:
    """The TPM2B at ``at`` in ``data`` and the offset after it."""
    if at + 2 > len(data):
        raise RotError(f"tpm2: {what}: truncated response")
    (size,) = struct.unpack_from(">H", data, at)
    if at + 2 + size > len(data):
        raise RotError(f"tpm2: {what}: truncated response")
    return data[at + 2 : at + 2 + size], at + 2 + size


def flush(transport: Transport, handle: int) -> None:
    """TPM2_FlushContext, ignoring the answer (the handle may already be gone)."""
    transport(struct.pack(">HIII", ST_NO_SESSIONS, 14, _CC_FLUSH_CONTEXT, handle))
