"""ES256 signature mechanics for JWS (RFC 7518 §3.4); no policy lives here.

JWS carries an ECDSA signature as the raw big-endian ``r || s``, each padded to
the curve size, not as the DER SEQUENCE that X.509 and ``cryptography`` use.
These helpers convert at the boundary and verify only with the SHA-256/P-256
pair the ``alg`` names, so a key of another curve never verifies an ES256 entry.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

ES256_SIZE = 32
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def sign_es256(key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> bytes:
    """Sign with any P-256 private key (a root-of-trust key too); raw ``r || s``."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ES256 needs a P-256 key")
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(ES256_SIZE, "big") + s.to_bytes(ES256_SIZE, "big")


def verify_es256(key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes) -> bool:
    """True only if ``signature`` is a valid raw ES256 signature by ``key``."""
    if not isinstance(key.curve, ec.SECP256R1) or len(signature) != 2 * ES256_SIZE:
        return False
    r = int.from_bytes(signature[:ES256_SIZE], "big")
    s = int.from_bytes(signature[ES256_SIZE:], "big")
    if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
        return False
    try:
        key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
