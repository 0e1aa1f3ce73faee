"""The ESAPI side of attestation: quotes, and credential activation for an unpersisted EK.

(TPM2_Certify and activation with a persisted EK are raw commands, see
keyfab.rot.tpm2._commands.)

Each function returns the TPM's raw marshalled structures untouched: the
verifier (keyfab.attest) parses and checks them itself and trusts nothing the
driver could have reinterpreted.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
from tpm2_pytss.types import (
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPML_PCR_SELECTION,
    TPMS_PCR_SELECTION,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
)

from keyfab.errors import ConfigError
from keyfab.rot.tpm2._device import PASSWORD, TpmConnection
from keyfab.rot.tpm2._ek import EndorsementKey, ek_policy, load_ek
from keyfab.rot.tpm2._sign import HASHES

MAX_NONCE = 64  # TPM2B_DATA holds at most a TPMT_HA; 64 bytes is SHA-512
_PCR_COUNT = 24


def check_nonce(nonce: bytes) -> bytes:
    if not 8 <= len(nonce) <= MAX_NONCE:
        raise ConfigError(f"tpm2: nonce must be 8 to {MAX_NONCE} bytes, not {len(nonce)}")
    return nonce


def pcr_selection(pcrs: Sequence[int], bank: str) -> TPML_PCR_SELECTION:
    if bank not in HASHES:
        raise ConfigError(f"tpm2: unknown PCR bank {bank!r}")
    if not pcrs or any(not 0 <= p < _PCR_COUNT for p in pcrs):
        raise ConfigError(f"tpm2: PCRs must be 0 to {_PCR_COUNT - 1}")
    bitmap = bytearray(3)
    for p in pcrs:
        bitmap[p // 8] |= 1 << (p % 8)
    selection = TPMS_PCR_SELECTION(hash=HASHES[bank], sizeofSelect=3, pcrSelect=bytes(bitmap))
    return TPML_PCR_SELECTION([selection])


def quote(
    tpm: TpmConnection, iak: ESYS_TR, pcrs: Sequence[int], bank: str, nonce: bytes
) -> tuple[bytes, bytes, bytes]:
    """TPM2_Quote by the IAK: (TPMS_ATTEST, TPMT_SIGNATURE, PCR values in index order)."""
    selection = pcr_selection(sorted(set(pcrs)), bank)
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL)
    attest, signature = tpm.call(
        "Quote", tpm.esys.quote, iak, selection, check_nonce(nonce), scheme
    )
    values = bytearray()
    remaining = sorted(set(pcrs))
    while remaining:  # PCR_Read returns at most 8 digests per call
        batch, remaining = remaining[:8], remaining[8:]
        _, _, digests = tpm.call("PCR_Read", tpm.esys.pcr_read, pcr_selection(batch, bank))
        values += b"".join(bytes(d) for d in digests)
    return bytes(attest.attestationData), bytes(signature.marshal()), bytes(values)


def activate_credential(
    tpm: TpmConnection,
    ek: EndorsementKey,
    iak: ESYS_TR,
    credential_blob: bytes,
    secret: bytes,
) -> bytes:
    """TPM2_ActivateCredential through ESAPI, for an EK nobody persisted.

    The EK is re-created from its template for the command and flushed after.
    (A persisted EK goes through keyfab.rot.tpm2._commands, which is faster.) The IAK
    is authorised by its (empty) password, the EK as ``ek_policy`` says.
    """
    ek_handle = load_ek(tpm, ek)
    policy = ek_policy(ek.public_area)
    session = PASSWORD if policy is None else _endorsement_policy(tpm, *policy)
    try:
        recovered = tpm.call(
            "ActivateCredential",
            tpm.esys.activate_credential,
            iak,
            ek_handle,
            TPM2B_ID_OBJECT(credential_blob),
            TPM2B_ENCRYPTED_SECRET(secret),
            PASSWORD,
            session,
        )
        return bytes(recovered)
    finally:
        if session != PASSWORD:
            tpm.esys.flush_context(session)
        tpm.esys.flush_context(ek_handle)


def _endorsement_policy(tpm: TpmConnection, name_alg: int, digest_size: int) -> ESYS_TR:
    """A policy session (in the EK's name algorithm) that ran PolicySecret(endorsement)."""
    session = tpm.call(
        "StartAuthSession",
        tpm.esys.start_auth_session,
        ESYS_TR.NONE,
        ESYS_TR.NONE,
        TPM2_SE.POLICY,
        TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        name_alg,
        # ESYS makes its own caller nonce slowly (~3 ms of host time here); ours is free.
        secrets.token_bytes(digest_size),
    )
    try:
        tpm.call("PolicySecret", tpm.esys.policy_secret, ESYS_TR.ENDORSEMENT, session)
    except BaseException:
        tpm.esys.flush_context(session)
        raise
    return session
