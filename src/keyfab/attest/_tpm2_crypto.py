"""Signature and credential mechanics for TPM evidence, computed in software.

No policy here (which attributes, which roots, which nonce): only "does this
signature verify under this key" and TPM2_MakeCredential as the TPM
specification (Part 1, 24: credential protection) defines it, so the CA never
needs a TPM of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from keyfab.attest._tpm2_wire import (
    ALG_AES,
    ALG_CFB,
    ALG_ECC,
    ALG_ECDSA,
    ALG_RSA,
    ALG_RSAPSS,
    HASH_NAMES,
    HASH_SIZES,
    TpmPublic,
    TpmSignature,
)
from keyfab.errors import VerificationError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_CURVES: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
_HASHES: dict[int, hashes.HashAlgorithm] = {
    0x000B: hashes.SHA256(),
    0x000C: hashes.SHA384(),
    0x000D: hashes.SHA512(),
}


def public_key(public: TpmPublic) -> PublicKey:
    """The ``cryptography`` key of a TPMT_PUBLIC."""
    try:
        if public.type == ALG_RSA:
            exponent = public.rsa_exponent or 65537
            return rsa.RSAPublicNumbers(
                exponent, int.from_bytes(public.unique[0], "big")
            ).public_key()
        assert public.curve is not None
        x, y = (int.from_bytes(v, "big") for v in public.unique)
        return ec.EllipticCurvePublicNumbers(x, y, _CURVES[public.curve]).public_key()
    except ValueError as error:
        raise VerificationError(f"TPMT_PUBLIC holds no valid public key: {error}") from None


def verify_signature(key: PublicKey, message: bytes, signature: TpmSignature) -> None:
    """Raise VerificationError unless ``signature`` over ``message`` verifies under ``key``."""
    algorithm = _HASHES[signature.hash_alg]
    try:
        if signature.algorithm == ALG_ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise VerificationError("ECDSA signature from a non-EC key")
            r, s = (int.from_bytes(v, "big") for v in signature.values)
            key.verify(utils.encode_dss_signature(r, s), message, ec.ECDSA(algorithm))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                raise VerificationError("RSA signature from a non-RSA key")
            pad: padding.AsymmetricPadding = (
                padding.PSS(padding.MGF1(algorithm), padding.PSS.AUTO)
                if signature.algorithm == ALG_RSAPSS
                else padding.PKCS1v15()
            )
            key.verify(signature.values[0], message, pad, algorithm)
    except InvalidSignature:
        raise VerificationError("the attestation signature does not verify under the IAK") from None


def kdf_a(
    hash_alg: int, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """KDFa (SP 800-108 counter mode with HMAC), TPM Part 1 11.4.10.2."""
    name = HASH_NAMES[hash_alg]
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        block = (
            struct.pack(">I", counter)
            + label
            + b"\x00"
            + context_u
            + context_v
            + struct.pack(">I", bits)
        )
        out += hmac.new(key, block, name).digest()
    return out[: (bits + 7) // 8]


def kdf_e(
    hash_alg: int, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int
) -> bytes:
    """KDFe (SP 800-56A concatenation KDF), TPM Part 1 11.4.10.3."""
    name = HASH_NAMES[hash_alg]
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hashlib.new(
            name, struct.pack(">I", counter) + z + label + b"\x00" + party_u + party_v
        ).digest()
    return out[: (bits + 7) // 8]


@dataclass(frozen=True)
class Credential:
    """A MakeCredential result: what the TPM gets and the secret it must give back."""

    credential_blob: bytes  # TPM2B_ID_OBJECT contents
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET contents
    secret: bytes


def make_credential(ek: TpmPublic, object_name: bytes, secret: bytes | None = None) -> Credential:
    """TPM2_MakeCredential in software: ``secret`` sealed to the EK, bound to ``object_name``.

    Only the TPM holding the EK's private key can recover the seed, and it
    releases the secret only if an object of exactly ``object_name`` is loaded
    beside the EK: so a correct answer proves the IAK lives in that TPM.
    """
    if ek.symmetric.algorithm != ALG_AES or ek.symmetric.mode != ALG_CFB:
        raise VerificationError("EK must use AES-CFB as its symmetric algorithm")
    secret = secret if secret is not None else secrets.token_bytes(32)
    digest_size = HASH_SIZES[ek.name_alg]
    if len(secret) > digest_size:
        raise VerificationError(f"credential secret longer than {digest_size} bytes")
    seed, encrypted_seed = _seed(ek)
    sym_key = kdf_a(ek.name_alg, seed, b"STORAGE", object_name, b"", ek.symmetric.key_bits)
    plain = struct.pack(">H", len(secret)) + secret
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(plain) + encryptor.finalize()
    hmac_key = kdf_a(ek.name_alg, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    outer = hmac.new(hmac_key, enc_identity + object_name, HASH_NAMES[ek.name_alg]).digest()
    blob = struct.pack(">H", len(outer)) + outer + enc_identity
    return Credential(blob, encrypted_seed, secret)


def _seed(ek: TpmPublic) -> tuple[bytes, bytes]:
    """A fresh seed and its encryption to the EK (RSA-OAEP or ECDH + KDFe)."""
    key = public_key(ek)
    algorithm = _HASHES[ek.name_alg]
    if ek.type == ALG_RSA and isinstance(key, rsa.RSAPublicKey):
        seed = secrets.token_bytes(HASH_SIZES[ek.name_alg])
        oaep = padding.OAEP(padding.MGF1(algorithm), algorithm, b"IDENTITY\x00")
        return seed, key.encrypt(seed, oaep)
    if ek.type != ALG_ECC or not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("EK is neither RSA nor ECC")
    ephemeral = ec.generate_private_key(key.curve)
    z = ephemeral.exchange(ec.ECDH(), key)
    size = (key.curve.key_size + 7) // 8
    numbers = ephemeral.public_key().public_numbers()
    ex, ey = numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")
    seed = kdf_e(ek.name_alg, z, b"IDENTITY", ex, ek.unique[0], HASH_SIZES[ek.name_alg] * 8)
    point = struct.pack(">H", size) + ex + struct.pack(">H", size) + ey
    return seed, point
