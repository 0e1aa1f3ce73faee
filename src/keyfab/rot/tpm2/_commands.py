"""The per-device hot path as raw TPM commands (see keyfab.rot.tpm2._raw for why).

Keys: CreatePrimary in the endorsement hierarchy, EvictControl to a persistent
handle, FlushContext; TPM2_Sign and TPM2_Certify on persistent handles; and
credential activation (StartAuthSession, PolicySecret, ActivateCredential).
"""

from __future__ import annotations

import secrets
import struct

from keyfab.errors import RotError
from keyfab.rot.tpm2._raw import (
    PASSWORD_AUTH,
    RH_ENDORSEMENT,
    RH_NULL,
    RH_OWNER,
    ST_NO_SESSIONS,
    ST_SESSIONS,
    Transport,
    b,
    command,
    flush,
    parameters,
    run,
    sized,
)

_CC_CREATE_PRIMARY, _CC_EVICT_CONTROL, _CC_READ_PUBLIC = 0x131, 0x120, 0x173
_CC_SIGN, _CC_CERTIFY, _CC_ECDH_ZGEN = 0x15D, 0x148, 0x154
_CC_START_AUTH_SESSION, _CC_POLICY_SECRET, _CC_ACTIVATE = 0x176, 0x151, 0x147
_SE_POLICY, _ALG_NULL, _ST_HASHCHECK = 0x01, 0x0010, 0x8024
_EMPTY_SENSITIVE = b(b(b"") + b(b""))  # TPM2B_SENSITIVE_CREATE: no auth value, no data
_NO_PCRS = struct.pack(">I", 0)


def create_persistent(transport: Transport, template: bytes, persistent: int) -> bytes:
    """Make a primary key from ``template`` (a marshalled TPM2B_PUBLIC) and persist it.

    Returns the key's TPMT_PUBLIC. The transient copy is flushed however it ends,
    so at most one transient slot is ever used.
    """
    params = _EMPTY_SENSITIVE + template + b(b"") + _NO_PCRS
    handles = struct.pack(">I", RH_ENDORSEMENT)
    body = run(
        transport,
        "CreatePrimary",
        command(ST_SESSIONS, _CC_CREATE_PRIMARY, handles, PASSWORD_AUTH, params),
    )
    if len(body) < 4:
        raise RotError("tpm2: CreatePrimary: truncated response")
    transient = int.from_bytes(body[:4], "big")
    try:
        public, _ = sized(parameters(body, 1, "CreatePrimary"), 0, "CreatePrimary")
        evict = struct.pack(">II", RH_OWNER, transient)
        request = command(
            ST_SESSIONS, _CC_EVICT_CONTROL, evict, PASSWORD_AUTH, struct.pack(">I", persistent)
        )
        run(transport, "EvictControl", request)
    finally:
        flush(transport, transient)
    return public


def evict(transport: Transport, persistent: int) -> None:
    """Remove a persisted key (EvictControl on its persistent handle)."""
    handles = struct.pack(">II", RH_OWNER, persistent)
    params = struct.pack(">I", persistent)
    run(
        transport,
        "EvictControl",
        command(ST_SESSIONS, _CC_EVICT_CONTROL, handles, PASSWORD_AUTH, params),
    )


def read_public(transport: Transport, handle: int) -> bytes:
    """The TPMT_PUBLIC of a loaded or persisted object."""
    body = run(
        transport,
        f"ReadPublic {handle:#010x}",
        command(ST_NO_SESSIONS, _CC_READ_PUBLIC, struct.pack(">I", handle), b"", b""),
    )
    public, _ = sized(body, 0, "ReadPublic")
    return public


def sign(transport: Transport, key: int, digest: bytes, scheme: int, hash_alg: int) -> bytes:
    """TPM2_Sign of a host-made digest with a null ticket; returns the TPMT_SIGNATURE."""
    ticket = struct.pack(">HI", _ST_HASHCHECK, RH_NULL) + b(b"")
    params = b(digest) + struct.pack(">HH", scheme, hash_alg) + ticket
    body = run(
        transport,
        "Sign",
        command(ST_SESSIONS, _CC_SIGN, struct.pack(">I", key), PASSWORD_AUTH, params),
    )
    return parameters(body, 0, "Sign")


def ecdh_zgen(transport: Transport, key: int, x: bytes, y: bytes) -> bytes:
    """TPM2_ECDH_ZGen: the shared point's x-coordinate for the peer point (x, y)."""
    point = b(b(x) + b(y))
    body = run(
        transport,
        "ECDH_ZGen",
        command(ST_SESSIONS, _CC_ECDH_ZGEN, struct.pack(">I", key), PASSWORD_AUTH, point),
    )
    out, _ = sized(parameters(body, 0, "ECDH_ZGen"), 0, "ECDH_ZGen")
    shared_x, _ = sized(out, 0, "ECDH_ZGen")
    return shared_x


def certify(transport: Transport, key: int, signer: int, nonce: bytes) -> tuple[bytes, bytes]:
    """TPM2_Certify of ``key`` by ``signer``: (TPMS_ATTEST, TPMT_SIGNATURE) as made."""
    params = b(nonce) + struct.pack(">H", _ALG_NULL)
    handles = struct.pack(">II", key, signer)
    body = run(
        transport,
        "Certify",
        command(ST_SESSIONS, _CC_CERTIFY, handles, PASSWORD_AUTH + PASSWORD_AUTH, params),
    )
    response = parameters(body, 0, "Certify")
    attest, end = sized(response, 0, "Certify")
    return attest, response[end:]


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
        request = _activate(handles, PASSWORD_AUTH + PASSWORD_AUTH, blob, secret)
        return _cert_info(run(transport, "ActivateCredential", request))
    session = _policy_session(transport, *ek_policy)
    # not continued: the TPM flushes the session itself when the command succeeds
    policy_auth = (
        struct.pack(">I", session) + b(secrets.token_bytes(ek_policy[1])) + b"\x00" + b(b"")
    )
    try:
        request = _activate(handles, PASSWORD_AUTH + policy_auth, blob, secret)
        return _cert_info(run(transport, "ActivateCredential", request))
    except RotError:
        flush(transport, session)
        raise


def _activate(handles: tuple[int, int], auths: bytes, blob: bytes, secret: bytes) -> bytes:
    return command(
        ST_SESSIONS, _CC_ACTIVATE, struct.pack(">II", *handles), auths, b(blob) + b(secret)
    )


def _policy_session(transport: Transport, name_alg: int, digest_size: int) -> int:
    """A policy session in ``name_alg`` that has run PolicySecret(TPM_RH_ENDORSEMENT)."""
    params = b(secrets.token_bytes(digest_size)) + b(b"")
    params += struct.pack(">BHH", _SE_POLICY, _ALG_NULL, name_alg)
    null_handles = struct.pack(">II", RH_NULL, RH_NULL)
    request = command(ST_NO_SESSIONS, _CC_START_AUTH_SESSION, null_handles, b"", params)
    started = run(transport, "StartAuthSession", request)
    if len(started) < 4:
        raise RotError("tpm2: StartAuthSession: truncated response")
    session = int.from_bytes(started[:4], "big")
    secret_params = b(b"") + b(b"") + b(b"") + struct.pack(">i", 0)
    handles = struct.pack(">II", RH_ENDORSEMENT, session)
    try:
        request = command(ST_SESSIONS, _CC_POLICY_SECRET, handles, PASSWORD_AUTH, secret_params)
        run(transport, "PolicySecret", request)
    except RotError:
        flush(transport, session)
        raise
    return session


def _cert_info(body: bytes) -> bytes:
    """certInfo (a TPM2B_DIGEST): the secret the CA sealed, as the TPM recovered it."""
    secret, _ = sized(parameters(body, 0, "ActivateCredential"), 0, "ActivateCredential")
    return secret
