"""Private keys that live in a root of trust but look like ``cryptography`` keys.

They subclass ``cryptography``'s key classes so that an HSM-held CA key or a
TPM-held device key drops into ``CertificateBuilder().sign(key, SHA256())``. The
message is hashed here on the host and only the digest goes to the hardware,
which is what every PKCS#11 token and TPM can sign. Anything that would reveal
the private key raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    KeySerializationEncryption,
    PrivateFormat,
)

from keyfab.errors import KeyNotExportableError, UnsupportedError

ECDigestSigner = Callable[[bytes, hashes.HashAlgorithm], bytes]
"""Signs a digest made with the given hash; returns a DER ECDSA signature."""

KeyAgreement = Callable[[ec.EllipticCurvePublicKey], bytes]
"""ECDH inside the root of trust: the peer's public key in, the shared x-coordinate out."""

RSADigestSigner = Callable[[bytes, hashes.HashAlgorithm, padding.AsymmetricPadding], bytes]
"""Signs a digest made with the given hash and padding; returns the signature."""


Message = bytes | bytearray | memoryview


def digest_of(
    data: Message, algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo
) -> tuple[bytes, hashes.HashAlgorithm]:
    """Hash ``data`` unless the caller already did (``Prehashed``)."""
    data = bytes(data)
    if isinstance(algorithm, utils.NoDigestInfo):
        raise UnsupportedError("raw RSA signatures without DigestInfo are not supported")
    if isinstance(algorithm, utils.Prehashed):
        hash_algorithm: hashes.HashAlgorithm = algorithm._algorithm
        if len(data) != hash_algorithm.digest_size:
            raise ValueError("prehashed data does not match the digest size")
        return data, hash_algorithm
    hasher = hashes.Hash(algorithm)
    hasher.update(data)
    return hasher.finalize(), algorithm


def _refuse(label: str) -> NoReturn:
    raise KeyNotExportableError(f"the private key {label!r} never leaves its root of trust")


class HardwareECPrivateKey(ec.EllipticCurvePrivateKey):
    """An elliptic-curve key whose ``sign()`` runs inside a root of trust."""

    def __init__(
        self,
        label: str,
        public_key: ec.EllipticCurvePublicKey,
        sign_digest: ECDigestSigner,
        agree: KeyAgreement | None = None,
    ):
        self.label = label
        self._public_key = public_key
        self._sign_digest = sign_digest
        self._agree = agree

    def sign(self, data: Message, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedError("only ECDSA signatures are supported")
        digest, hash_algorithm = digest_of(data, signature_algorithm.algorithm)
        return self._sign_digest(digest, hash_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public_key.curve

    @property
    def key_size(self) -> int:
        return self._public_key.curve.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        """ECDH in the root of trust, for keys made for agreement (``KeyUsage.AGREE``)."""
        if self._agree is None:
            raise UnsupportedError(f"key {self.label!r} is not a key-agreement key")
        if not isinstance(algorithm, ec.ECDH):
            raise UnsupportedError("only ECDH key agreement is supported")
        if peer_public_key.curve.name != self.curve.name:
            raise UnsupportedError(
                f"the peer's key is on {peer_public_key.curve.name}, not {self.curve.name}"
            )
        return self._agree(peer_public_key)

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _refuse(self.label)

    def private_bytes(
        self,
        encoding: Encoding,
        format: PrivateFormat,
        encryption_algorithm: KeySerializationEncryption,
    ) -> bytes:
        _refuse(self.label)

    def __copy__(self) -> HardwareECPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> HardwareECPrivateKey:
        return self

    def __repr__(self) -> str:
        return f"<HardwareECPrivateKey {self.label!r} {self.curve.name}>"


class HardwareRSAPrivateKey(rsa.RSAPrivateKey):
    """An RSA key whose ``sign()`` runs inside a root of trust."""

    def __init__(self, label: str, public_key: rsa.RSAPublicKey, sign_digest: RSADigestSigner):
        self.label = label
        self._public_key = public_key
        self._sign_digest = sign_digest

    def sign(
        self,
        data: Message,
        padding: padding.AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        digest, hash_algorithm = digest_of(data, algorithm)
        return self._sign_digest(digest, hash_algorithm, padding)

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    @property
    def key_size(self) -> int:
        return self._public_key.key_size

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        raise UnsupportedError("decryption with a root-of-trust key is not supported")

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _refuse(self.label)

    def private_bytes(
        self,
        encoding: Encoding,
        format: PrivateFormat,
        encryption_algorithm: KeySerializationEncryption,
    ) -> bytes:
        _refuse(self.label)

    def __copy__(self) -> HardwareRSAPrivateKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> HardwareRSAPrivateKey:
        return self

    def __repr__(self) -> str:
        return f"<HardwareRSAPrivateKey {self.label!r} rsa-{self.key_size}>"
