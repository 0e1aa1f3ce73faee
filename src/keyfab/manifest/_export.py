"""Writing signed manifests: the mechanics of the export flow.

Entries are signed one at a time and written as they are made, so exporting a
large batch needs no more memory than one entry. The protected header names the
signer exactly as Microchip does: ``kid`` is the base64url subject key
identifier of the signer certificate and ``x5t#S256`` the SHA-256 of its DER.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyfab.clock import utc_now
from keyfab.errors import ConfigError
from keyfab.manifest._b64 import b64url_encode
from keyfab.manifest._certs import subject_key_id, thumbprint
from keyfab.manifest._jws import sign_es256
from keyfab.manifest._model import CURVES, EcJwk, Organization, ProtectedHeader, SecureElement
from keyfab.manifest._serialize import dumps_compact, element_json, header_json

_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384"}
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def device_element(
    unique_id: str,
    keys: Sequence[tuple[str, Sequence[x509.Certificate]]],
    provisioned_at: datetime.datetime,
    model: str,
    part_number: str,
    provisioner: Organization | None = None,
    group_id: str | None = None,
) -> SecureElement:
    """A version-1 payload for one keyfab-provisioned device.

    ``keys`` are (kid, certificate chain) pairs, identity key first; each JWK
    carries its chain in ``x5c`` so every key can be checked against its
    certificate. keyfab is manufacturer and provisioner; there is no distributor.
    """
    jwks = tuple(_jwk(unique_id, kid, chain) for kid, chain in keys)
    return SecureElement(
        version=1,
        model=model,
        part_number=part_number,
        manufacturer=provisioner,
        provisioner=provisioner,
        distributor=None,
        group_id=group_id,
        provisioned_at=provisioned_at,
        unique_id=unique_id,
        keys=jwks,
    )


def _jwk(unique_id: str, kid: str, chain: Sequence[x509.Certificate]) -> EcJwk:
    key = chain[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVE_NAMES:
        raise ConfigError(f"device {unique_id}: only P-256/P-384 keys fit a manifest")
    crv = _CURVE_NAMES[key.curve.name]
    size = CURVES[crv][1]
    numbers = key.public_numbers()
    return EcJwk(
        kid=kid,
        crv=crv,
        x=numbers.x.to_bytes(size, "big"),
        y=numbers.y.to_bytes(size, "big"),
        x5c=tuple(c.public_bytes(serialization.Encoding.DER) for c in chain),
    )


class EntrySigner:
    """Signs entries with a manifest-signer key and its certificate."""

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        signed_at: datetime.datetime | None = None,
    ) -> None:
        """``signed_at`` (default now) becomes the header's ``iat``: the verifier checks
        the signer certificate at that moment, not at each device's provisioning."""
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError("a manifest signer key must be P-256 (ES256)")
        if key.public_key().public_bytes(*_SPKI) != certificate.public_key().public_bytes(*_SPKI):
            raise ConfigError("the signer key does not belong to the signer certificate")
        key_id = subject_key_id(certificate)
        if key_id is None:
            raise ConfigError("the signer certificate has no subject key identifier")
        self._key = key
        self.thumbprint_b64 = b64url_encode(thumbprint(certificate))
        header = ProtectedHeader(
            alg="ES256",
            x5t_s256=thumbprint(certificate),
            kid=b64url_encode(key_id),
            typ="JWT",
            iat=int((signed_at or utc_now()).timestamp()),
        )
        self._protected = b64url_encode(dumps_compact(header_json(header)))

    def sign(self, element: SecureElement) -> dict[str, Any]:
        """One flattened JWS JSON entry for ``element``."""
        payload = b64url_encode(dumps_compact(element_json(element)))
        signature = sign_es256(self._key, f"{self._protected}.{payload}".encode("ascii"))
        return {
            "payload": payload,
            "protected": self._protected,
            "header": {"uniqueId": element.unique_id},
            "signature": b64url_encode(signature),
        }


class ManifestWriter:
    """Writes a JSON array of entries to a binary stream, one entry per line."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.count = 0

    def __enter__(self) -> ManifestWriter:
        self._out.write(b"[")
        return self

    def write(self, entry: dict[str, Any]) -> None:
        self._out.write(b"\n" if self.count == 0 else b",\n")
        self._out.write(dumps_compact(entry))
        self.count += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # On an error the array stays open: a reader then refuses the file
        # instead of taking a truncated manifest for a complete one.
        if kind is None:
            self._out.write(b"\n]\n")


def write_manifest(elements: Iterable[SecureElement], signer: EntrySigner, out: BinaryIO) -> int:
    """Sign and write every element; returns how many entries were written."""
    with ManifestWriter(out) as writer:
        for element in elements:
            writer.write(signer.sign(element))
    return writer.count
