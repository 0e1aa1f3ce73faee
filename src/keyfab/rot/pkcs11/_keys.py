"""Key pairs inside a PKCS#11 token: templates, public keys and digest signing.

Keys are made on the token and stay there: the private half is CKA_TOKEN,
CKA_PRIVATE, CKA_SENSITIVE and never CKA_EXTRACTABLE, and may only sign. The host
hashes (see ``_keys``) and the token signs the digest with the *raw* mechanism
(CKM_ECDSA, CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS), because those are
what every token offers (SoftHSM2 2.6 has no CKM_ECDSA_SHA256) and because the
combined mechanisms would need the whole message. Which raw mechanism exists is
read from the token's mechanism list, never assumed.
"""

from __future__ import annotations

from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pkcs11 import Attribute, KeyType, Mechanism

from keyfab.errors import RotError, UnsupportedError
from keyfab.rot.base import KeyAlgorithm, KeyUsage, PublicKey

# DER OIDs of the named curves, as CKA_EC_PARAMS wants them.
_EC_PARAMS = {
    KeyAlgorithm.EC_P256: bytes.fromhex("06082a8648ce3d030107"),
    KeyAlgorithm.EC_P384: bytes.fromhex("06052b81040022"),
}
# DigestInfo prefixes of RFC 8017 section 9.2, note 1: CKM_RSA_PKCS signs these + digest.
_DIGEST_INFO = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_MAX_RSA_BYTES = 4096 // 8 + 1
_MAX_EXPONENT_BYTES = 8
_PSS_HASH = {
    "sha256": (Mechanism.SHA256, pkcs11.MGF.SHA256),
    "sha384": (Mechanism.SHA384, pkcs11.MGF.SHA384),
    "sha512": (Mechanism.SHA512, pkcs11.MGF.SHA512),
}


def generation_mechanism(algorithm: KeyAlgorithm, available: frozenset[Mechanism]) -> Mechanism:
    """The key-pair generation mechanism for ``algorithm``, if the token has it."""
    wanted = Mechanism.EC_KEY_PAIR_GEN if algorithm.is_ec else Mechanism.RSA_PKCS_KEY_PAIR_GEN
    if wanted not in available:
        raise UnsupportedError(f"the token cannot generate {algorithm.value} keys")
    return wanted


def templates(
    algorithm: KeyAlgorithm, label: str, key_id: bytes, usage: KeyUsage = KeyUsage.SIGN
) -> tuple[dict[Attribute, Any], dict[Attribute, Any]]:
    """Public and private templates: a key for one job that never leaves the token.

    A signing key may only sign; an agreement key (EC only) may only derive.
    """
    agree = usage is KeyUsage.AGREE
    if agree and not algorithm.is_ec:
        raise UnsupportedError(f"key agreement needs an EC key, not {algorithm.value}")
    common = {Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: key_id}
    public: dict[Attribute, Any] = {
        **common,
        Attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: not agree,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
    }
    private: dict[Attribute, Any] = {
        **common,
        Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: not agree,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: agree,
    }
    if algorithm.is_ec:
        public[Attribute.KEY_TYPE] = private[Attribute.KEY_TYPE] = KeyType.EC
        public[Attribute.EC_PARAMS] = _EC_PARAMS[algorithm]
    else:
        public[Attribute.KEY_TYPE] = private[Attribute.KEY_TYPE] = KeyType.RSA
        public[Attribute.MODULUS_BITS] = algorithm.rsa_bits
        public[Attribute.PUBLIC_EXPONENT] = b"\x01\x00\x01"
    return public, private


def public_key_of(obj: pkcs11.Object) -> PublicKey:
    """The ``cryptography`` public key of a token public-key object."""
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.RSA:
        return rsa_public_key(bytes(obj[Attribute.MODULUS]), bytes(obj[Attribute.PUBLIC_EXPONENT]))
    if key_type == KeyType.EC:
        return ec_public_key(bytes(obj[Attribute.EC_PARAMS]), bytes(obj[Attribute.EC_POINT]))
    raise UnsupportedError("the token key is neither EC nor RSA")


def rsa_public_key(modulus: bytes, exponent: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from CKA_MODULUS and CKA_PUBLIC_EXPONENT, sizes checked first."""
    if len(modulus) > _MAX_RSA_BYTES or len(exponent) > _MAX_EXPONENT_BYTES:
        raise RotError("the token returned an RSA key larger than keyfab accepts")
    try:
        return rsa.RSAPublicNumbers(
            int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
        ).public_key()
    except ValueError:
        raise RotError("the token returned an invalid RSA public key") from None


def ec_public_key(params: bytes, point: bytes) -> ec.EllipticCurvePublicKey:
    """An EC public key from CKA_EC_PARAMS and CKA_EC_POINT, checked to be on the curve."""
    algorithm = next((a for a, p in _EC_PARAMS.items() if p == params), None)
    if algorithm is None:
        raise UnsupportedError("the token key is on a curve keyfab does not use")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(
            algorithm.curve, _ec_point(point, algorithm.curve)
        )
    except ValueError:
        raise RotError("the token returned an EC point that is not on its curve") from None


def _ec_point(value: bytes, curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the point; some tokens omit it."""
    raw_length = 1 + 2 * ((curve.key_size + 7) // 8)
    if len(value) == raw_length:
        return value
    if len(value) == raw_length + 2 and value[0] == 0x04 and value[1] == raw_length:
        return value[2:]
    raise RotError("the token returned a malformed EC point")


def sign_ec(
    key: pkcs11.SignMixin, available: frozenset[Mechanism], digest: bytes, curve_bytes: int
) -> bytes:
    """ECDSA over a host-made digest; the token's raw r||s comes back as DER."""
    if Mechanism.ECDSA not in available:
        raise UnsupportedError("the token has no raw ECDSA (CKM_ECDSA)")
    raw = key.sign(digest, mechanism=Mechanism.ECDSA)
    if len(raw) != 2 * curve_bytes:
        raise RotError("the token returned an ECDSA signature of the wrong size")
    r = int.from_bytes(raw[:curve_bytes], "big")
    s = int.from_bytes(raw[curve_bytes:], "big")
    return utils.encode_dss_signature(r, s)


def sign_rsa(
    key: pkcs11.SignMixin,
    available: frozenset[Mechanism],
    digest: bytes,
    algorithm: hashes.HashAlgorithm,
    pad: padding.AsymmetricPadding,
    key_bits: int,
) -> bytes:
    """RSA PKCS#1 v1.5 or PSS over a host-made digest."""
    if algorithm.name not in _DIGEST_INFO:
        raise UnsupportedError(f"RSA signing with {algorithm.name} is not supported")
    if isinstance(pad, padding.PKCS1v15):
        if Mechanism.RSA_PKCS not in available:
            raise UnsupportedError("the token has no raw RSA PKCS#1 v1.5 (CKM_RSA_PKCS)")
        return bytes(key.sign(_DIGEST_INFO[algorithm.name] + digest, mechanism=Mechanism.RSA_PKCS))
    if isinstance(pad, padding.PSS):
        if Mechanism.RSA_PKCS_PSS not in available:
            raise UnsupportedError("the token has no raw RSA-PSS (CKM_RSA_PKCS_PSS)")
        params = _pss_params(pad, algorithm, key_bits)
        return bytes(key.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=params))
    raise UnsupportedError(f"RSA padding {pad.name} is not supported")


def _pss_params(
    pad: padding.PSS, algorithm: hashes.HashAlgorithm, key_bits: int
) -> tuple[Mechanism, pkcs11.MGF, int]:
    mgf_hash = getattr(pad.mgf, "_algorithm", algorithm)
    if mgf_hash.name != algorithm.name:
        raise UnsupportedError("RSA-PSS with an MGF1 hash other than the message hash")
    salt = pad._salt_length
    if isinstance(salt, padding._MaxLength | padding._Auto):
        salt = (key_bits + 7) // 8 - algorithm.digest_size - 2
    elif isinstance(salt, padding._DigestLength):
        salt = algorithm.digest_size
    hash_mechanism, mgf = _PSS_HASH[algorithm.name]
    return hash_mechanism, mgf, int(salt)


def ecdh(key: pkcs11.DeriveMixin, peer: ec.EllipticCurvePublicKey) -> bytes:
    """CKM_ECDH1_DERIVE with no KDF: the shared x-coordinate, in a session-only secret.

    The derived secret is a session object (CKA_TOKEN false) that the caller's
    HKDF needs to read, so it is extractable; the private key itself is not.
    """
    point = peer.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    size = (peer.curve.key_size + 7) // 8
    secret = key.derive_key(
        KeyType.GENERIC_SECRET,
        size * 8,
        mechanism=Mechanism.ECDH1_DERIVE,
        mechanism_param=(pkcs11.KDF.NULL, None, point),
        template={
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
            Attribute.VALUE_LEN: size,
        },
    )
    try:
        return bytes(secret[Attribute.VALUE])
    finally:
        secret.destroy()
