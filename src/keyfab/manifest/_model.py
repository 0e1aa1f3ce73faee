"""The manifest format as data: what one signed secure-element entry says.

A Microchip Trust Platform manifest is a JSON array of flattened JWS JSON
serializations (RFC 7515 §7.2.2). Each entry's payload describes one secure
element: who made, provisioned and distributed it, its unique id and the public
keys in its slots, the first with its certificate chain in ``x5c``. These
classes hold the decoded values; ``_parse`` builds them strictly from JSON and
``_serialize`` writes them back. Nothing here checks signatures or trust.
"""

from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

CURVES: dict[str, tuple[ec.EllipticCurve, int]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
}
"""JWK ``crv`` names keyfab accepts, with the curve and its coordinate size."""


@functools.lru_cache(maxsize=4096)
def ec_point(crv: str, x: bytes, y: bytes) -> ec.EllipticCurvePublicKey:
    """The public key at (x, y) on ``crv``; ValueError if it is not on the curve.

    Building it checks the point (a scalar multiplication's worth of work), and
    an entry's keys are needed by the parser, the verifier and the import in
    turn: remembered for the few thousand keys of the chunk being imported.
    """
    curve, _ = CURVES[crv]
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
    ).public_key()


@dataclass(frozen=True)
class Organization:
    """A manufacturer, provisioner or distributor: an X.500-like O and OU."""

    name: str
    unit: str


@dataclass(frozen=True)
class EcJwk:
    """One slot's public key as an EC JWK (RFC 7518 §6.2), with its chain if any."""

    kid: str
    crv: str
    x: bytes
    y: bytes
    x5c: tuple[bytes, ...] = ()
    """DER certificates: the key's own first, then the CAs that issued it."""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key as a ``cryptography`` object (the parser has checked the point)."""
        return ec_point(self.crv, self.x, self.y)

    def certificates(self) -> list[x509.Certificate]:
        """The ``x5c`` chain decoded (the parser has checked that each one loads)."""
        return [x509.load_der_x509_certificate(der) for der in self.x5c]


@dataclass(frozen=True)
class SecureElement:
    """The decoded payload of one entry (manifest versions 1 and 2)."""

    version: int
    model: str
    part_number: str
    manufacturer: Organization | None
    provisioner: Organization | None
    distributor: Organization | None
    group_id: str | None
    provisioned_at: datetime.datetime
    unique_id: str
    keys: tuple[EcJwk, ...]

    def identity_key(self) -> EcJwk | None:
        """The key that carries a certificate chain: the device's identity."""
        return next((key for key in self.keys if key.x5c), None)


@dataclass(frozen=True)
class ProtectedHeader:
    """The integrity-protected JOSE header of an entry."""

    alg: str
    x5t_s256: bytes
    """SHA-256 of the signer certificate's DER: how the signer is chosen."""
    kid: str | None = None
    """Microchip puts the signer certificate's subject key identifier here."""
    typ: str | None = "JWT"
    iat: int | None = None
    """When the entry was signed (seconds since 1970, RFC 7519's ``iat`` carried in
    the header). keyfab's exports set it because an export is signed long after
    the devices were provisioned; Microchip's reels, signed at provisioning, omit it."""


@dataclass(frozen=True)
class SignedEntry:
    """One manifest entry: the exact encoded members plus their decoded meaning.

    The encoded ``protected`` and ``payload`` strings are kept as they were read
    because the signature covers those characters, not a re-serialization.
    """

    protected_b64: str
    payload_b64: str
    signature: bytes
    header: ProtectedHeader
    element: SecureElement

    @property
    def signing_input(self) -> bytes:
        """ASCII ``protected.payload``: the bytes the ES256 signature covers."""
        return f"{self.protected_b64}.{self.payload_b64}".encode("ascii")
