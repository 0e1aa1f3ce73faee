"""TPM2_Sign behind the ``cryptography`` key classes.

The host hashes (keyfab.rot._keys); the TPM signs the digest with a null
hash-check ticket, which a non-restricted key accepts. Restricted keys (the IAK)
sign only what the TPM generated itself, so asking them to sign a host digest is
refused here with a clear reason instead of a TPM error code.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from tpm2_pytss.constants import TPM2_ALG

from keyfab.errors import RotError, UnsupportedError
from keyfab.rot._keys import HardwareECPrivateKey, HardwareRSAPrivateKey
from keyfab.rot.base import PrivateKey, PublicKey
from keyfab.rot.tpm2._commands import ecdh_zgen, sign
from keyfab.rot.tpm2._raw import Transport, sized

HASHES = {"sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384, "sha512": TPM2_ALG.SHA512}


def hash_alg(algorithm: hashes.HashAlgorithm) -> int:
    if algorithm.name not in HASHES:
        raise UnsupportedError(f"tpm2: cannot sign {algorithm.name} digests")
    return int(HASHES[algorithm.name])


def _rsa_scheme(pad: padding.AsymmetricPadding, algorithm: hashes.HashAlgorithm) -> int:
    if isinstance(pad, padding.PKCS1v15):
        return int(TPM2_ALG.RSASSA)
    if isinstance(pad, padding.PSS):
        salt = pad._salt_length
        if salt is padding.PSS.DIGEST_LENGTH or salt == algorithm.digest_size:
            return int(TPM2_ALG.RSAPSS)
        raise UnsupportedError("tpm2: RSA-PSS signatures use a salt as long as the digest")
    raise UnsupportedError(f"tpm2: unsupported RSA padding {pad.name}")


def _signature_values(signature: bytes) -> tuple[int, list[bytes]]:
    """(sigAlg, [r, s] or [sig]) from a marshalled TPMT_SIGNATURE."""
    if len(signature) < 4:
        raise RotError("tpm2: Sign: truncated signature")
    (algorithm,) = struct.unpack_from(">H", signature)
    values, at = [], 4  # after sigAlg and hash
    for _ in range(2 if algorithm == TPM2_ALG.ECDSA else 1):
        value, at = sized(signature, at, "Sign")
        values.append(value)
    return algorithm, values


def wrap_key(
    transport: Transport,
    label: str,
    handle: int,
    public_key: PublicKey,
    restricted: bool,
) -> PrivateKey:
    """A ``cryptography`` private key whose ``sign()`` is TPM2_Sign on persistent ``handle``."""

    def refuse() -> None:
        if restricted:
            raise UnsupportedError(
                f"tpm2: {label!r} is a restricted attestation key; it signs only TPM-made data"
            )

    if isinstance(public_key, ec.EllipticCurvePublicKey):

        def sign_ec(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            refuse()
            raw = sign(transport, handle, digest, TPM2_ALG.ECDSA, hash_alg(algorithm))
            _, (r, s) = _signature_values(raw)
            return utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))

        return HardwareECPrivateKey(label, public_key, sign_ec)

    assert isinstance(public_key, rsa.RSAPublicKey)

    def sign_rsa(
        digest: bytes, algorithm: hashes.HashAlgorithm, pad: padding.AsymmetricPadding
    ) -> bytes:
        refuse()
        raw = sign(transport, handle, digest, _rsa_scheme(pad, algorithm), hash_alg(algorithm))
        return _signature_values(raw)[1][0]

    return HardwareRSAPrivateKey(label, public_key, sign_rsa)


def wrap_agreement_key(
    transport: Transport, label: str, handle: int, public_key: ec.EllipticCurvePublicKey
) -> PrivateKey:
    """A ``cryptography`` EC key whose ``exchange()`` is TPM2_ECDH_ZGen; it cannot sign."""
    size = (public_key.curve.key_size + 7) // 8

    def refuse(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        raise UnsupportedError(f"tpm2: {label!r} is a key-agreement key; it cannot sign")

    def agree(peer: ec.EllipticCurvePublicKey) -> bytes:
        numbers = peer.public_numbers()
        return ecdh_zgen(
            transport, handle, numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")
        )

    return HardwareECPrivateKey(label, public_key, refuse, agree)
