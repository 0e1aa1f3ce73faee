"""The provisioning flow for one device (DESIGN.md steps 1-8), split in two halves.

``issue_device`` runs steps 1-5: open the root of trust, generate the keys inside
it, collect evidence, build and check a CSR signed inside the device, issue the
certificates. The caller then records them in the registry (step 8) BEFORE
``write_back`` runs steps 6-7 (certificates, chain, objects, counters, lock).
That order is what makes batches crash-safe: a certificate reaches a device only
after the registry holds it, so no certificate ever exists without its row.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from keyfab.errors import KeyNotFoundError, ProvisionError, RotLockedError, VerificationError
from keyfab.pki import CertificateAuthority, DeviceIdentity, check_csr, idevid, signature_hash
from keyfab.provision.recipe import Recipe
from keyfab.rot import KeySpec, PrivateKey, RootOfTrust

CHAIN_PREFIX = "ca-cert-"


def certificate_label(key_label: str) -> str:
    """The object label under which a key's certificate is written (DER)."""
    return f"{key_label}-cert"


@dataclass(frozen=True)
class IssuedCertificate:
    key_label: str
    profile: str
    certificate: x509.Certificate


@dataclass(frozen=True)
class Issuance:
    """What steps 1-5 produced for one device, ready to be recorded."""

    device_id: int
    unique_id: str
    rot_kind: str
    public_key: bytes  # SubjectPublicKeyInfo DER of the first key
    certificates: tuple[IssuedCertificate, ...]
    evidence: Mapping[str, Any] | None = field(default=None)


def _key(rot: RootOfTrust, label: str, spec: KeySpec) -> PrivateKey:
    """The device's key: reuse one a crashed earlier attempt made, else generate."""
    try:
        key = rot.key(label)
    except KeyNotFoundError:
        return rot.generate_key(label, spec)
    if not spec.matches(key.public_key()):
        raise ProvisionError(f"device already holds a key {label!r} of another type")
    return key


def _csr(key: PrivateKey, serial: str) -> x509.CertificateSigningRequest:
    subject = x509.Name([x509.NameAttribute(NameOID.SERIAL_NUMBER, serial)])
    return (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, signature_hash(key))
    )


def issue_device(
    rot: RootOfTrust, device_id: int, serial: str, recipe: Recipe, ca: CertificateAuthority
) -> Issuance:
    """Steps 1-5 for one device. Raises VerificationError if the device's proof fails."""
    info = rot.info
    identity = DeviceIdentity(
        serial, recipe.product.hw_type, recipe.product.organization, recipe.product.name
    )
    issued: list[IssuedCertificate] = []
    evidence: dict[str, Any] = {}
    first_public_key = b""
    for entry in recipe.keys:
        spec = KeySpec(entry.algorithm)
        key = _key(rot, entry.label, spec)
        nonce = secrets.token_bytes(32)
        proof = rot.certify(entry.label, nonce)
        if proof is not None:
            evidence[entry.label] = {
                "format": proof.format,
                "nonce": nonce.hex(),
                "parts": {k: base64.b64encode(v).decode() for k, v in proof.parts.items()},
            }
        csr = _csr(key, serial)
        public_key = check_csr(csr)
        if public_key != key.public_key() or not spec.matches(public_key):
            raise VerificationError(
                f"CSR for {entry.label!r} does not carry the device's {spec.algorithm} key"
            )
        if not first_public_key:
            first_public_key = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        if entry.profile == "idevid":
            issued.append(
                IssuedCertificate(entry.label, "idevid", ca.issue(idevid(identity), public_key))
            )
    return Issuance(
        device_id, info.unique_id, info.kind, first_public_key, tuple(issued), evidence or None
    )


def write_back(
    rot: RootOfTrust,
    certificates: Sequence[tuple[str, bytes]],
    chain: Sequence[bytes],
    recipe: Recipe,
    objects: Mapping[str, bytes],
) -> None:
    """Steps 6-7: certificates and chain into the device, read back, objects, lock.

    Idempotent, so a resumed batch can run it again on a device that crashed
    half-way through it.
    """
    writes = [(certificate_label(label), der) for label, der in certificates]
    writes += [(f"{CHAIN_PREFIX}{i}", der) for i, der in enumerate(chain)]
    writes += list(objects.items())
    for label, data in writes:
        with contextlib.suppress(RotLockedError):  # locked before a crash: check only
            rot.store_object(label, data)
        if not hmac.compare_digest(rot.load_object(label), data):
            raise ProvisionError(f"object {label!r} read back from the device differs")
    for name, value in recipe.counters.items():
        rot.counter(name).advance_to(value)
    if recipe.finish.lock:
        rot.lock()
