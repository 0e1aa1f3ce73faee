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

_CURVES = {KeyAlgorithm.EC_P256: TPM2_ECC.NIST_P256, KeyAlgorithm.EC_P384: TPM2_ECC.NIST_P384}
_HASH_OF = {KeyAlgorithm.EC_P256: TPM2_ALG.SHA256, KeyAlgorithm.EC_P384: TPM2_ALG.SHA384}


def key_template(algorithm: KeyAlgorithm, *, restricted: bool) -> TPM2B_PUBLIC:
    """An identity (IDevID) or attestation (IAK, ``restricted``) key template.

    The unique field gets fresh random bytes: a primary key is derived from the
    hierarchy seed and its template, so without them two IDevIDs made from the
    same template would be the same key.
    """
    public = TPMT_PUBLIC(
        nameAlg=TPM2_ALG.SHA256,
        objectAttributes=IAK_ATTRIBUTES if restricted else KEY_ATTRIBUTES,
    )
    if algorithm.is_ec:
        public.type = TPM2_ALG.ECC
        params = TPMS_ECC_PARMS(curveID=_CURVES[algorithm])
        params.symmetric.algorithm = TPM2_ALG.NULL
        params.kdf.scheme = TPM2_ALG.NULL
        if restricted:
            params.scheme.scheme = TPM2_ALG.ECDSA
            params.scheme.details.ecdsa.hashAlg = _HASH_OF[algorithm]
        else:
            params.scheme.scheme = TPM2_ALG.NULL
        public.parameters.eccDetail = params
        public.unique.ecc.x = secrets.token_bytes(32)
    else:
        public.type = TPM2_ALG.RSA
        rsa_params = TPMS_RSA_PARMS(keyBits=algorithm.rsa_bits, exponent=0)
        rsa_params.symmetric.algorithm = TPM2_ALG.NULL
        if restricted:
            rsa_params.scheme.scheme = TPM2_ALG.RSASSA
            rsa_params.scheme.details.rsassa.hashAlg = TPM2_ALG.SHA256
        else:
            rsa_params.scheme.scheme = TPM2_ALG.NULL
        public.parameters.rsaDetail = rsa_params
        public.unique.rsa = secrets.token_bytes(32)
    return TPM2B_PUBLIC(publicArea=public)


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
