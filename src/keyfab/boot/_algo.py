"""Hash and signature algorithms by their FIT names ("sha256", "sha256,rsa2048").

Signature mechanics only: turning regions into a digest, a digest into a FIT
signature value and back. Which signatures are *required* is policy and lives in
``_policy``.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from keyfab.boot._errors import FitError
from keyfab.boot._tokens import Bytes

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_IMAGE_HASHES = frozenset({"crc32", "md5", *_HASHES})
_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
_CURVES: dict[str, ec.EllipticCurve] = {"ecdsa256": ec.SECP256R1(), "ecdsa384": ec.SECP384R1()}

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""What signs a FIT: a root-of-trust key or a PEM file read as mkimage -k reads it."""


def image_digest(algo: str, chunks: Iterable[Bytes]) -> bytes:
    """The value of an image hash node: ``algo`` over ``chunks`` without copying them."""
    if algo not in _IMAGE_HASHES:
        raise FitError(f"unsupported hash algorithm {algo!r}")
    if algo == "crc32":
        crc = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
        return crc.to_bytes(4, "big")
    hasher = hashlib.new(algo, usedforsecurity=algo not in ("md5", "sha1"))
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest()


def digests_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison: a verifier must not leak how much of a hash matched."""
    return hmac.compare_digest(a, b)


@dataclass(frozen=True)
class SignatureAlgorithm:
    """A FIT ``algo`` such as ``sha256,rsa2048`` plus the optional ``padding``."""

    checksum: str
    crypto: str
    pss: bool = False

    @classmethod
    def parse(cls, algo: str, padding_name: str | None = None) -> SignatureAlgorithm:
        checksum, _, crypto = algo.partition(",")
        if checksum not in _HASHES or (crypto not in _RSA_BITS and crypto not in _CURVES):
            raise FitError(f"unsupported signature algorithm {algo!r}")
        if padding_name not in (None, "pkcs-1.5", "pss"):
            raise FitError(f"unsupported padding {padding_name!r}")
        if padding_name == "pss" and crypto not in _RSA_BITS:
            raise FitError("PSS padding applies to RSA only")
        return cls(checksum, crypto, padding_name == "pss")

    @classmethod
    def for_key(
        cls, key: SigningKey, checksum: str = "sha256", pss: bool = False
    ) -> SignatureAlgorithm:
        """The algorithm name U-Boot uses for this key (its size picks rsaNNNN / ecdsaNNN)."""
        if isinstance(key, rsa.RSAPrivateKey):
            crypto = f"rsa{key.key_size}"
        else:
            crypto = f"ecdsa{key.curve.key_size}"
        return cls.parse(f"{checksum},{crypto}", "pss" if pss else None)

    @property
    def name(self) -> str:
        return f"{self.checksum},{self.crypto}"

    @property
    def is_rsa(self) -> bool:
        return self.crypto in _RSA_BITS

    @property
    def key_bits(self) -> int:
        return _RSA_BITS[self.crypto] if self.is_rsa else _CURVES[self.crypto].key_size

    @property
    def curve(self) -> ec.EllipticCurve:
        return _CURVES[self.crypto]

    def hash(self) -> hashes.HashAlgorithm:
        return _HASHES[self.checksum]()

    def digest(self, chunks: Iterable[Bytes]) -> bytes:
        return image_digest(self.checksum, chunks)

    def _rsa_padding(self) -> padding.AsymmetricPadding:
        if self.pss:
            # mkimage signs with a salt as long as the digest; U-Boot accepts any.
            return padding.PSS(padding.MGF1(self.hash()), self.hash().digest_size)
        return padding.PKCS1v15()

    def sign(self, key: SigningKey, digest: bytes) -> bytes:
        """The FIT ``value`` for ``digest``: RSA as is, ECDSA as raw r||s."""
        prehashed = utils.Prehashed(self.hash())
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size != self.key_bits:
                raise FitError(f"key is rsa{key.key_size}, algorithm says {self.name}")
            return key.sign(digest, self._rsa_padding(), prehashed)
        if key.curve.name != self.curve.name:
            raise FitError(f"key is on {key.curve.name}, algorithm says {self.name}")
        r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(prehashed)))
        size = (self.key_bits + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def verify(
        self, public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, digest: bytes, value: bytes
    ) -> bool:
        """True when ``value`` signs ``digest`` under ``public``; never raises on a bad one."""
        prehashed = utils.Prehashed(self.hash())
        try:
            if isinstance(public, rsa.RSAPublicKey):
                if not self.is_rsa or public.key_size != self.key_bits:
                    return False
                pad = (
                    padding.PSS(padding.MGF1(self.hash()), padding.PSS.AUTO)
                    if self.pss
                    else padding.PKCS1v15()
                )
                public.verify(value, digest, pad, prehashed)
                return True
            size = (self.key_bits + 7) // 8
            if self.is_rsa or public.curve.name != self.curve.name or len(value) != 2 * size:
                return False
            r, s = int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big")
            public.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(prehashed))
            return True
        except InvalidSignature:
            return False
