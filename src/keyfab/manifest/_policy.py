"""What makes one manifest entry trustworthy: keyfab's verification policy.

The mechanics (ES256 in ``_jws``, path building in ``_chain``) answer "is this
signature valid"; this module decides which key must have made it and what else
must hold. An entry is accepted only if all of these hold:

1. its ``x5t#S256`` names a signer certificate the operator trusts, and its
   ``kid`` (when present) is that certificate's subject key identifier;
2. the ES256 signature over ``protected.payload`` verifies with that signer;
3. the signer certificate was valid when the entry was signed: at the
   protected header's ``iat`` when present (keyfab exports, signed long after
   provisioning; the device must have been provisioned by then), else at the
   payload's provisioningTimestamp (Microchip signs at provisioning). Never
   "now": manifests are long-lived and signers expire;
4. every key's ``x5c`` (the identity key's at least) chains to one of the
   given roots, now; without roots only entries with no ``x5c`` at all (bare
   keys, version 2) can pass;
5. each such JWK's coordinates are exactly its certificate's public key.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.clock import utc_now
from keyfab.errors import VerificationError
from keyfab.manifest._b64 import b64url_encode
from keyfab.manifest._certs import Signer, SignerSet
from keyfab.manifest._chain import verify_device_chain
from keyfab.manifest._jws import verify_es256
from keyfab.manifest._model import EcJwk, SignedEntry

_POINT = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


@dataclass(frozen=True)
class VerifiedEntry:
    """An entry that passed every check, with the signer and chain that proved it."""

    entry: SignedEntry
    signer: Signer
    chain: tuple[x509.Certificate, ...]
    """Device certificate first, root last; empty for a version-2 entry without keys."""


class VerificationPolicy:
    """The trusted signers and device roots, and the time chains are checked at."""

    def __init__(
        self,
        signers: SignerSet,
        roots: Sequence[x509.Certificate],
        now: datetime.datetime | None = None,
    ) -> None:
        self.signers = signers
        self.roots = list(roots)
        self.now = now or utc_now()

    def verify(self, entry: SignedEntry) -> VerifiedEntry:
        """The entry with its proof, or VerificationError saying which check failed."""
        signer = self._signer(entry)
        if not verify_es256(_signer_key(signer), entry.signing_input, entry.signature):
            raise VerificationError("signature does not verify with the signer certificate")
        _check_signing_time(entry, signer.certificate)
        return VerifiedEntry(entry, signer, self._device_chain(entry))

    def _signer(self, entry: SignedEntry) -> Signer:
        signer = self.signers.find(entry.header.x5t_s256)
        if signer is None:
            raise VerificationError(
                f"no trusted signer has x5t#S256 {b64url_encode(entry.header.x5t_s256)}"
            )
        kid = entry.header.kid
        if kid is not None:
            expected = b64url_encode(signer.key_id or b"").encode("ascii")
            if signer.key_id is None or not hmac.compare_digest(kid.encode("ascii"), expected):
                raise VerificationError("kid is not the signer certificate's key identifier")
        return signer

    def _device_chain(self, entry: SignedEntry) -> tuple[x509.Certificate, ...]:
        """Check every key that carries ``x5c``; return the identity key's chain."""
        element = entry.element
        chains = [self._key_chain(key) for key in element.keys if key.x5c]
        if not chains:
            if element.version == 1:
                raise VerificationError("no key in publicKeySet carries an x5c certificate")
            return ()
        return chains[0]

    def _key_chain(self, key: EcJwk) -> tuple[x509.Certificate, ...]:
        if not self.roots:
            raise VerificationError(
                "the entry carries certificates but no roots were given: pass --roots"
            )
        certificates = key.certificates()
        chain = verify_device_chain(certificates[0], certificates[1:], self.roots, self.now)
        _check_same_key(key, certificates[0])
        return tuple(chain)


def _check_signing_time(entry: SignedEntry, cert: x509.Certificate) -> None:
    """The signer was valid when it signed; an entry is not signed before provisioning."""
    provisioned = entry.element.provisioned_at
    iat = entry.header.iat
    moment = provisioned if iat is None else datetime.datetime.fromtimestamp(iat, datetime.UTC)
    if moment < provisioned.replace(microsecond=0):
        raise VerificationError("signed (iat) before the device was provisioned")
    if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
        raise VerificationError("signed outside the signer certificate's validity period")


def _signer_key(signer: Signer) -> ec.EllipticCurvePublicKey:
    key = signer.certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("the signer certificate's key is not an EC key")
    return key


def _check_same_key(jwk: EcJwk, certificate: x509.Certificate) -> None:
    """The JWK must be the certificate's key, compared as encoded points."""
    cert_key = certificate.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey):
        raise VerificationError("the device certificate's key is not an EC key")
    if cert_key.curve.name != jwk.public_key().curve.name:
        raise VerificationError("the JWK's curve differs from the device certificate's")
    if not hmac.compare_digest(
        cert_key.public_bytes(*_POINT), jwk.public_key().public_bytes(*_POINT)
    ):
        raise VerificationError("the JWK is not the device certificate's public key")
