"""Credential activation as raw TPM commands, for persisted keys.

Why not ESAPI: tpm2-tss 3.x with OpenSSL 3 creates and frees a whole OpenSSL
library context for every caller nonce it makes (esys_crypto_ossl.c), about
3 ms each here, and it makes one per policy-session command. Activation is the
one exchange that needs a policy session (the EK's PolicySecret), so building
its three commands by hand (TPM 2.0 Part 3: StartAuthSession, PolicySecret,
ActivateCredential) takes ~6 ms off every device. Only persistent handles are
used, so ESAPI's view of the TPM stays true.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable

from keyfab.errors import RotError

_ST_NO_SESSIONS, _ST_SESSIONS = 0x8001, 0x8002
_CC_START_AUTH_SESSION, _CC_POLICY_SECRET, _CC_ACTIVATE = 0x176, 0x151, 0x147
_CC_FLUSH_CONTEXT = 0x165
_RH_NULL, _RH_ENDORSEMENT, _RS_PW = 0x40000007, 0x4000000B, 0x40000009
_SE_POLICY, _ALG_NULL = 0x01, 0x0010
_PASSWORD_AUTH = struct.pack(">IHBH", _RS_PW, 0, 0, 0)  # empty password, no attributes
_HEADER = 10

Transport = Callable[[bytes], bytes]


def _b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _command(tag: int, code: int, handles: bytes, auths: bytes, params: bytes) -> bytes:
    body = (
        handles + (struct.pack(">I", len(auths)) + auths if tag == _ST_SESSIONS else b"") + params
    )
    return struct.pack(">HII", tag, _HEADER + len(body), code) + body


def _run(transport: Transport, what: str, command: bytes) -> bytes:
    response = transport(command)
    if len(response) < _HEADER:
        raise RotError(f"tpm2: {what}: short response from the TPM")
    _, size, rc = struct.unpack_from(">HII", response)
    if rc != 0:
        raise RotError(f"tpm2: {what} failed: TPM response code {rc:#x}")
    if size != len(response):
        raise RotError(f"tpm2: {what}: response size mismatch")
    return response[_HEADER:]


def _flush(transport: Transport, handle: int) -> None:
    transport(struct.pack(">HIII", _ST_NO_SESSIONS, 14, _CC_FLUSH_CONTEXT, handle))


def activate_credential(
    transport: Transport,
    handles: tuple[int, int],
    ek_policy: tuple[int, int] | None,
    blob: bytes,
    secret: bytes,
) -> bytes:
    """ActivateCredential on (IAK, EK) persistent ``handles``.

    ``ek_policy`` is (nameAlg, digest size) when the EK is authorised by
    PolicySecret(endorsement), the EK Credential Profile default; None when the
    EK takes its (empty) password (userWithAuth, as swtpm's high-range EKs).
    """
    if ek_policy is None:
        command = _activate(handles, _PASSWORD_AUTH + _PASSWORD_AUTH, blob, secret)
        return _cert_info(_run(transport, "ActivateCredential", command))
    session = _policy_session(transport, *ek_policy)
    # not continued: the TPM flushes the session itself when the command succeeds
    policy_auth = (
        struct.pack(">I", session) + _b(secrets.token_bytes(ek_policy[1])) + b"\x00" + _b(b"")
    )
    try:
        command = _activate(handles, _PASSWORD_AUTH + policy_auth, blob, secret)
        return _cert_info(_run(transport, "ActivateCredential", command))
    except RotError:
        _flush(transport, session)
        raise


def _activate(handles: tuple[int, int], auths: bytes, blob: bytes, secret: bytes) -> bytes:
    return _command(
        _ST_SESSIONS, _CC_ACTIVATE, struct.pack(">II", *handles), auths, _b(blob) + _b(secret)
    )


def _policy_session(transport: Transport, name_alg: int, digest_size: int) -> int:
    """A policy session in ``name_alg`` that has run PolicySecret(TPM_RH_ENDORSEMENT)."""
    params = _b(secrets.token_bytes(digest_size)) + _b(b"")
    params += struct.pack(">BHH", _SE_POLICY, _ALG_NULL, name_alg)
    null_handles = struct.pack(">II", _RH_NULL, _RH_NULL)
    command = _command(_ST_NO_SESSIONS, _CC_START_AUTH_SESSION, null_handles, b"", params)
    started = _run(transport, "StartAuthSession", command)
    if len(started) < 4:
        raise RotError("tpm2: StartAuthSession: truncated response")
    session = int.from_bytes(started[:4], "big")
    secret_params = _b(b"") + _b(b"") + _b(b"") + struct.pack(">i", 0)
    handles = struct.pack(">II", _RH_ENDORSEMENT, session)
    try:
        command = _command(_ST_SESSIONS, _CC_POLICY_SECRET, handles, _PASSWORD_AUTH, secret_params)
        _run(transport, "PolicySecret", command)
    except RotError:
        _flush(transport, session)
        raise
    return session


def _cert_info(parameters: bytes) -> bytes:
    """certInfo (a TPM2B_DIGEST) from ActivateCredential's response parameters."""
    if len(parameters) < 6:
        raise RotError("tpm2: ActivateCredential: truncated response")
    (size,) = struct.unpack_from(">H", parameters, 4)  # after parameterSize
    if 6 + size > len(parameters):
        raise RotError("tpm2: ActivateCredential: truncated response")
    return parameters[6 : 6 + size]
