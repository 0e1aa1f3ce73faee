"""TPM2_Sign behind the ``cryptography`` key classes.

The host hashes (keyfab.rot._keys); the TPM signs the digest with a null
hash-check ticket, which a non-restricted key accepts. Restricted keys (the IAK)
sign only what the TPM generated itself, so asking them to sign a host digest is
refused here with a clear reason instead of a TPM error code.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RH, TPM2_ST
from tpm2_pytss.types import TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK

from keyfab.errors import UnsupportedError
from keyfab.rot._keys import HardwareECPrivateKey, HardwareRSAPrivateKey
from keyfab.rot._tpm2_device import TpmConnection
from keyfab.rot.base import PrivateKey, PublicKey

HASHES = {"sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384, "sha512": TPM2_ALG.SHA512}


def hash_alg(algorithm: hashes.HashAlgorithm) -> int:
    if algorithm.name not in HASHES:
        raise UnsupportedError(f"tpm2: cannot sign {algorithm.name} digests")
    return int(HASHES[algorithm.name])


def _scheme(scheme: int, algorithm: hashes.HashAlgorithm) -> TPMT_SIG_SCHEME:
    result = TPMT_SIG_SCHEME(scheme=scheme)
    result.details.any.hashAlg = hash_alg(algorithm)
    return result


def _null_ticket() -> TPMT_TK_HASHCHECK:
    return TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)


def _rsa_scheme(pad: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> int:
    if isinstance(pad, padding.PKCS1v15):
        return int(TPM2_ALG.RSASSA)
    if isinstance(pad, padding.PSS):
        salt = pad._salt_length
        if salt is padding.PSS.DIGEST_LENGTH or salt == algorithm.digest_size:
            return int(TPM2_ALG.RSAPSS)
        raise UnsupportedError("tpm2: RSA-PSS signatures use a salt as long as the digest")
    raise UnsupportedError(f"tpm2: unsupported RSA padding {pad.name}")


def wrap_key(
    tpm: TpmConnection,
    label: str,
    handle: Callable[[], ESYS_TR],
    public_key: PublicKey,
    restricted: bool,
) -> PrivateKey:
    """A ``cryptography`` private key whose ``sign()`` is TPM2_Sign on ``handle()``."""

    def refuse() -> None:
        if restricted:
            raise UnsupportedError(
                f"tpm2: {label!r} is a restricted attestation key; it signs only TPM-made data"
            )

    if isinstance(public_key, ec.EllipticCurvePublicKey):

        def sign_ec(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            refuse()
            scheme = _scheme(TPM2_ALG.ECDSA, algorithm)
            sig = tpm.call("Sign", tpm.esys.sign, handle(), digest, scheme, _null_ticket())
            r = int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big")
            s = int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big")
            return utils.encode_dss_signature(r, s)

        return HardwareECPrivateKey(label, public_key, sign_ec)

    assert isinstance(public_key, rsa.RSAPublicKey)

    def sign_rsa(
        digest: bytes, algorithm: hashes.HashAlgorithm, pad: padding.AsymmetricPadding
    ) -> bytes:
        refuse()
        scheme = _scheme(_rsa_scheme(pad, algorithm), algorithm)
        sig = tpm.call("Sign", tpm.esys.sign, handle(), digest, scheme, _null_ticket())
        if int(sig.sigAlg) == TPM2_ALG.RSAPSS:
            return bytes(sig.signature.rsapss.sig)
        return bytes(sig.signature.rsassa.sig)

    return HardwareRSAPrivateKey(label, public_key, sign_rsa)
