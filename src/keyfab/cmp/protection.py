"""CMP message protection (RFC 4210 §5.1.3, RFC 9481 §6): MACs and signatures.

Accepted MACs: PasswordBasedMac (what OpenSSL 3.0 sends) and PBMAC1 (PBKDF2
then HMAC, RFC 8018/9481). Their iteration counts are bounded both ways: a
request cannot make keyfab spin, nor weaken the key stretching below RFC
9481's floor. Every comparison is constant-time. Signatures: ECDSA and RSA
PKCS#1 v1.5 with SHA-2, checked with the certificate the sender put first in
extraCerts (RFC 9483 §3.3); whether keyfab trusts that certificate is the
responder's question, not this module's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pyasn1.codec.der import decoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc2459, rfc4210, rfc8018

from keyfab.cmp._errors import CmpError
from keyfab.cmp.messages import encode

PBM = univ.ObjectIdentifier("1.2.840.113533.7.66.13")
PBMAC1 = rfc8018.id_PBMAC1
PBKDF2 = rfc8018.id_PBKDF2
MIN_ITERATIONS = 100  # RFC 9481 §6.1.1
MAX_PBM_ITERATIONS = 10_000  # PasswordBasedMac iterates in Python: keep a request cheap
MAX_PBKDF2_ITERATIONS = 200_000
_ONE_WAY = {  # PasswordBasedMac's owf
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}
_HMAC = {  # MAC algorithms: the HMAC hash by OID
    "1.3.6.1.5.5.8.1.2": "sha1",  # hmac-sha1, OpenSSL 3.0's default -mac
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
_SIGNATURES: dict[str, tuple[type[hashes.HashAlgorithm], bool]] = {  # (hash, is ECDSA)
    "1.2.840.10045.4.3.2": (hashes.SHA256, True),
    "1.2.840.10045.4.3.3": (hashes.SHA384, True),
    "1.2.840.10045.4.3.4": (hashes.SHA512, True),
    "1.2.840.113549.1.1.11": (hashes.SHA256, False),
    "1.2.840.113549.1.1.12": (hashes.SHA384, False),
    "1.2.840.113549.1.1.13": (hashes.SHA512, False),
}
ECDSA_SHA256 = "1.2.840.10045.4.3.2"


def is_mac(algorithm: Any) -> bool:
    return algorithm.isValue and algorithm["algorithm"] in (PBM, PBMAC1)


def _parameters(algorithm: Any, spec: Any) -> Any:
    try:
        value, rest = decoder.decode(bytes(algorithm["parameters"]), asn1Spec=spec)
    except (PyAsn1Error, ValueError, TypeError):
        raise CmpError("badAlg", "unreadable MAC parameters") from None
    if rest:
        raise CmpError("badAlg", "bytes after the MAC parameters")
    return value


def _hash_name(table: dict[str, str], oid: Any) -> str:
    name = table.get(str(oid))
    if name is None:
        raise CmpError("badAlg", f"unsupported algorithm {oid}")
    return name


def _iterations(value: Any, ceiling: int) -> int:
    count = int(value)
    if not MIN_ITERATIONS <= count <= ceiling:
        raise CmpError("badAlg", f"iteration count must be {MIN_ITERATIONS}..{ceiling}")
    return count


def _pbm(params: Any, secret: bytes, data: bytes) -> bytes:
    """PasswordBasedMac: key = owf^n(secret || salt), then the HMAC (RFC 4210 §5.1.3.1)."""
    owf = _hash_name(_ONE_WAY, params["owf"]["algorithm"])
    mac = _hash_name(_HMAC, params["mac"]["algorithm"])
    key = secret + bytes(params["salt"])
    for _ in range(_iterations(params["iterationCount"], MAX_PBM_ITERATIONS)):
        key = hashlib.new(owf, key).digest()
    return hmac.digest(key, data, mac)


def _pbmac1(params: Any, secret: bytes, data: bytes) -> bytes:
    """PBMAC1: PBKDF2 derives the HMAC key (RFC 8018 §7.1, RFC 9481 §6.1.2)."""
    kdf = params["keyDerivationFunc"]
    if kdf["algorithm"] != PBKDF2:
        raise CmpError("badAlg", "PBMAC1 needs PBKDF2")
    pbkdf2 = _parameters(kdf, rfc8018.PBKDF2_params())
    salt = pbkdf2["salt"]
    if salt.getName() != "specified" or not pbkdf2["keyLength"].isValue:
        raise CmpError("badAlg", "PBKDF2 needs a specified salt and a keyLength")
    length = int(pbkdf2["keyLength"])
    if not 16 <= length <= 64:
        raise CmpError("badAlg", "PBKDF2 keyLength must be 16..64 bytes")
    prf = _hash_name(_HMAC, pbkdf2["prf"]["algorithm"])
    count = _iterations(pbkdf2["iterationCount"], MAX_PBKDF2_ITERATIONS)
    key = hashlib.pbkdf2_hmac(prf, secret, bytes(salt["specified"]), count, length)
    return hmac.digest(key, data, _hash_name(_HMAC, params["messageAuthScheme"]["algorithm"]))


def mac(algorithm: Any, secret: bytes, data: bytes) -> bytes:
    """The MAC ``algorithm`` (with its parameters) gives over ``data``."""
    if algorithm["algorithm"] == PBM:
        return _pbm(_parameters(algorithm, rfc4210.PBMParameter()), secret, data)
    return _pbmac1(_parameters(algorithm, rfc8018.PBMAC1_params()), secret, data)


def check_mac(algorithm: Any, secret: bytes, data: bytes, protection: bytes) -> None:
    if not hmac.compare_digest(mac(algorithm, secret, data), protection):
        raise CmpError("badMessageCheck", "the MAC does not verify")


def fresh_mac_algorithm(algorithm: Any) -> Any:
    """The request's MAC algorithm with a fresh salt, to protect the answer with."""
    answer = rfc2459.AlgorithmIdentifier()
    answer["algorithm"] = algorithm["algorithm"]
    if algorithm["algorithm"] == PBM:
        params = _parameters(algorithm, rfc4210.PBMParameter())
        params["salt"] = params["salt"].clone(secrets.token_bytes(16))
    else:
        params = _parameters(algorithm, rfc8018.PBMAC1_params())
        pbkdf2 = _parameters(params["keyDerivationFunc"], rfc8018.PBKDF2_params())
        pbkdf2["salt"]["specified"] = secrets.token_bytes(16)
        params["keyDerivationFunc"]["parameters"] = univ.Any(encode(pbkdf2))
    answer["parameters"] = univ.Any(encode(params))
    return answer


def _verify(algorithm: Any, key: Any, data: bytes, signature: bytes, failure: str) -> None:
    found = _SIGNATURES.get(str(algorithm["algorithm"]))
    if found is None:
        raise CmpError("badAlg", f"unsupported signature algorithm {algorithm['algorithm']}")
    digest, is_ecdsa = found
    try:
        if is_ecdsa and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(digest()))
        elif not is_ecdsa and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), digest())
        else:
            raise CmpError(failure, "the signature algorithm does not fit the key")
    except InvalidSignature:
        raise CmpError(failure, "the signature does not verify") from None


def check_signature(
    algorithm: Any, signer: x509.Certificate, data: bytes, signature: bytes
) -> None:
    """Verify a signature-protected message with its sender's certificate."""
    _verify(algorithm, signer.public_key(), data, signature, "badMessageCheck")


def check_pop(algorithm: Any, public_key: Any, data: bytes, signature: bytes) -> None:
    """Proof of possession: the CertRequest signed by the requested key (RFC 4211 §4.1)."""
    _verify(algorithm, public_key, data, signature, "badPOP")


def signature_algorithm() -> Any:
    """ecdsa-with-SHA256: the responder key is P-256 (``authority.credentials``)."""
    value = rfc2459.AlgorithmIdentifier()
    value["algorithm"] = univ.ObjectIdentifier(ECDSA_SHA256)
    return value


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))
