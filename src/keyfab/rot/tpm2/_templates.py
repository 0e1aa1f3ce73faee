"""Public-area templates for the keys keyfab asks a TPM to make.

The IDevID and IAK follow the TCG "TPM 2.0 Keys for Device Identity and
Attestation" shape: created in the endorsement hierarchy, fixedTPM, fixedParent
and sensitiveDataOrigin (the TPM made the key and it can never leave), the IAK
restricted so it only signs what the TPM itself generated (certify, quote). The
EK templates are the TCG EK Credential Profile's L-1 (RSA 2048) and L-2 (ECC
P-256): a TPM re-creates the same EK from them, which lets keyfab find the EK on
TPMs where nobody persisted it.
"""

from __future__ import annotations

import secrets
import struct

from tpm2_pytss.constants import TPM2_ALG, TPM2_ECC, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_RSA_PARMS,
    TPMT_PUBLIC,
)

from keyfab.errors import UnsupportedError
from keyfab.rot.base import KeyAlgorithm

KEY_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.SIGN_ENCRYPT
)
IAK_ATTRIBUTES = KEY_ATTRIBUTES | TPMA_OBJECT.RESTRICTED
AGREEMENT_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.DECRYPT
)
"""An ECDH key (TPM2_ECDH_ZGen): an unrestricted decryption key that cannot sign."""

EK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.ADMINWITHPOLICY
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
)
# PolicySecret(TPM_RH_ENDORSEMENT): the EK Credential Profile's default EK policy.
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")

_ALG_RSA, _ALG_ECC, _ALG_SHA256, _ALG_SHA384 = 0x0001, 0x0023, 0x000B, 0x000C
_ALG_RSASSA, _ALG_ECDSA = 0x0014, 0x0018
_NULL = struct.pack(">H", 0x0010)  # TPM_ALG_NULL: no symmetric, scheme or KDF
_EC = {KeyAlgorithm.EC_P256: (_ALG_SHA256, 0x0003), KeyAlgorithm.EC_P384: (_ALG_SHA384, 0x0004)}


def key_template(
    algorithm: KeyAlgorithm, *, restricted: bool, attributes: int | None = None
) -> bytes:
    """An identity (IDevID) or attestation (IAK, ``restricted``) key template.

    Returned marshalled (a TPM2B_PUBLIC, TPM 2.0 Part 2 12.2.4), ready for a raw
    CreatePrimary. The unique field gets fresh random bytes: a primary key is
    derived from the hierarchy seed and its template, so without them two
    IDevIDs made from the same template would be the same key. ``attributes``
    overrides the TPMA_OBJECT bits (tests make deliberately weak keys with it).
    """
    if attributes is None:
        attributes = int(IAK_ATTRIBUTES if restricted else KEY_ATTRIBUTES)
    head = struct.pack(">HHI", _ALG_ECC if algorithm.is_ec else _ALG_RSA, _ALG_SHA256, attributes)
    head += struct.pack(">H", 0)  # no authPolicy
    if algorithm.is_ec:
        hash_alg, curve = _EC[algorithm]
        scheme = struct.pack(">HH", _ALG_ECDSA, hash_alg) if restricted else _NULL
        params = _NULL + scheme + struct.pack(">H", curve) + _NULL
        unique = _sized(secrets.token_bytes(32)) + _sized(b"")
    else:
        scheme = struct.pack(">HH", _ALG_RSASSA, _ALG_SHA256) if restricted else _NULL
        params = _NULL + scheme + struct.pack(">HI", algorithm.rsa_bits, 0)
        unique = _sized(secrets.token_bytes(32))
    return _sized(head + params + unique)


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def ek_template(algorithm: KeyAlgorithm) -> TPM2B_PUBLIC:
    """The EK Credential Profile template L-1 (RSA 2048) or L-2 (ECC P-256)."""
    public = TPMT_PUBLIC(
        nameAlg=TPM2_ALG.SHA256, objectAttributes=EK_ATTRIBUTES, authPolicy=EK_POLICY
    )
    if algorithm is KeyAlgorithm.RSA_2048:
        public.type = TPM2_ALG.RSA
        params = TPMS_RSA_PARMS(keyBits=2048, exponent=0)
        params.symmetric.algorithm = TPM2_ALG.AES
        params.symmetric.keyBits.aes = 128
        params.symmetric.mode.aes = TPM2_ALG.CFB
        params.scheme.scheme = TPM2_ALG.NULL
        public.parameters.rsaDetail = params
        public.unique.rsa = bytes(256)
    elif algorithm is KeyAlgorithm.EC_P256:
        public.type = TPM2_ALG.ECC
        ecc = TPMS_ECC_PARMS(curveID=TPM2_ECC.NIST_P256)
        ecc.symmetric.algorithm = TPM2_ALG.AES
        ecc.symmetric.keyBits.aes = 128
        ecc.symmetric.mode.aes = TPM2_ALG.CFB
        ecc.scheme.scheme = TPM2_ALG.NULL
        ecc.kdf.scheme = TPM2_ALG.NULL
        public.parameters.eccDetail = ecc
        public.unique.ecc.x = bytes(32)
        public.unique.ecc.y = bytes(32)
    else:
        raise UnsupportedError(f"no standard EK template for {algorithm.value}")
    return TPM2B_PUBLIC(publicArea=public)
