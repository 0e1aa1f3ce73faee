"""The one key policy every certificate keyfab signs must meet.

It is checked where nothing can go around it: ``CertificateAuthority.issue``
(every issuer, batches, EST, stations, TLS and manifest signers, ends there)
and ``check_csr`` (before a CSR's signature is verified, so a refused key costs
no work). Accepted:

* RSA with a modulus of 2048 to 8192 bits: below 2048 is breakable or close to
  it; above 8192 buys nothing and makes every verification slow (a cheap way
  to make the CA do work);
* EC on P-256 or P-384: the curves every root of trust keyfab drives can make
  and every verifier knows. P-521 is left out: no keyfab driver generates it,
  many TPMs and secure elements cannot use it, and the Web PKI root programs
  do not accept it either, so a P-521 device key could not be used anyway.

A CSR must be signed with SHA-256, SHA-384 or SHA-512: SHA-1 and MD5 have
chosen-prefix collisions. Products narrow this further through their recipe's
key algorithms (``provision.flow`` checks each key against its ``KeySpec``).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyfab.errors import InvalidRequestError

RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
"""Allowed curves: cryptography's name to the name people read."""
SIGNATURE_HASHES = frozenset({"sha256", "sha384", "sha512"})
"""Hashes a signature keyfab accepts (on a CSR, in a device chain): SHA-2 of 256 bits up."""
_HASH_NAMES = {"md5": "MD5", "sha1": "SHA-1", "sha224": "SHA-224"}

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class KeyNotAllowedError(InvalidRequestError):
    """A key or CSR signature outside the key policy: the request itself is wrong."""

    default_slug = "key-not-allowed"


def _allowed() -> str:
    return ", ".join(CURVES.values())


def _check_rsa(key: rsa.RSAPublicKey) -> None:
    bits = key.key_size
    if bits < RSA_MIN_BITS:
        raise KeyNotAllowedError(f"key refused: RSA-{bits} is below the {RSA_MIN_BITS}-bit minimum")
    if bits > RSA_MAX_BITS:
        raise KeyNotAllowedError(f"key refused: RSA-{bits} is above the {RSA_MAX_BITS}-bit maximum")


def check_public_key(key: object) -> PublicKey:
    """``key`` if the policy accepts it, else KeyNotAllowedError naming why in one line."""
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa(key)
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CURVES:
            raise KeyNotAllowedError(
                f"key refused: curve {key.curve.name} is not allowed ({_allowed()})"
            )
        return key
    kind = type(key).__name__.removesuffix("PublicKey").removeprefix("_")
    raise KeyNotAllowedError(
        f"key refused: {kind} is not allowed (RSA {RSA_MIN_BITS}-{RSA_MAX_BITS} bits, "
        f"EC {_allowed()})"
    )


def check_csr_signature(csr: x509.CertificateSigningRequest) -> None:
    """Refuse a CSR signed with a broken hash (SHA-1, MD5) or one keyfab does not know."""
    try:
        algorithm = csr.signature_hash_algorithm
    except UnsupportedAlgorithm:
        raise KeyNotAllowedError(
            "CSR refused: signed with an unsupported algorithm", slug="signature-not-allowed"
        ) from None
    if algorithm is None or algorithm.name not in SIGNATURE_HASHES:
        name = "no hash" if algorithm is None else _HASH_NAMES.get(algorithm.name, algorithm.name)
        raise KeyNotAllowedError(f"CSR refused: signed with {name}", slug="signature-not-allowed")
