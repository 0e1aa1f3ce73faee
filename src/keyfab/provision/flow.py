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
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from keyfab.attest import AttestingRot, CertifiedKey, Tpm2Policy, attest_key
from keyfab.authority import Issued
from keyfab.errors import KeyNotFoundError, ProvisionError, RotLockedError, VerificationError
from keyfab.pki import (
    CertificateAuthority,
    DeviceIdentity,
    Template,
    check_csr,
    iak,
    idevid,
    signature_hash,
)
from keyfab.provision.recipe import Recipe
from keyfab.rot import EnrolledRot, Evidence, KeySpec, PrivateKey, PublicKey, RootOfTrust

CHAIN_PREFIX = "ca-cert-"
IAK_LABEL = "iak"  # the IAK certificate is written back as object "iak-cert"
ENROLMENT = "enrolment"  # evidence entry of an EnrolledRot, beside the per-key entries


def certificate_label(key_label: str) -> str:
    """The object label under which a key's certificate is written (DER)."""
    return f"{key_label}-cert"


@dataclass(frozen=True)
class Issuance:
    """What steps 1-5 produced for one device, ready to be recorded."""

    device_id: int
    unique_id: str
    rot_kind: str
    public_key: bytes  # SubjectPublicKeyInfo DER of the first key
    certificates: tuple[Issued, ...]
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


def _evidence_record(proof: Evidence, nonce: bytes) -> dict[str, Any]:
    return {
        "format": proof.format,
        "nonce": nonce.hex(),
        "parts": {k: base64.b64encode(v).decode() for k, v in proof.parts.items()},
    }


def _attest(
    rot: RootOfTrust, label: str, attestation: Tpm2Policy | None
) -> tuple[dict[str, Any] | None, CertifiedKey | None]:
    """Step 3: the device's evidence for ``label``, checked by the CA when it can be.

    With a TPM policy, the whole TCG exchange runs (certify with a fresh nonce,
    verification, credential activation binding the IAK to the EK); a failure is
    a VerificationError and the device gets no certificate.
    """
    nonce = secrets.token_bytes(32)
    if attestation is not None and isinstance(rot, AttestingRot):
        certified, proof = attest_key(rot, label, attestation, nonce)
        record = _evidence_record(proof, nonce)
        record["verified"] = {
            "ek_manufacturer": certified.manufacturer,
            "ek_certificate_sha256": hashlib.sha256(certified.ek_certificate).hexdigest(),
            "credential_activation": True,
        }
        return record, certified
    proof_or_none = rot.certify(label, nonce)
    if proof_or_none is not None and attestation is not None:
        raise VerificationError(f"no verifier for {proof_or_none.format!r} evidence")
    return (None if proof_or_none is None else _evidence_record(proof_or_none, nonce)), None


@functools.lru_cache(maxsize=32)
def _enrolled(kind: type[RootOfTrust]) -> bool:
    """Whether a driver class keeps an enrolment record: a protocol check, paid once per
    class rather than once per device (it walks the protocol's members each time)."""
    return issubclass(kind, EnrolledRot)


def issue_device(
    rot: RootOfTrust,
    device_id: int,
    serial: str,
    recipe: Recipe,
    ca: CertificateAuthority,
    attestation: Tpm2Policy | None = None,
    context: Mapping[str, Any] | None = None,
    issuer: str | None = None,
) -> Issuance:
    """Steps 1-5 for one device. Raises VerificationError if the device's proof fails.

    ``attestation`` (TPM devices) makes the CA verify the evidence before it
    issues, then issue an IAK certificate beside the IDevID. The certificates
    come back unrecorded: the caller records them (``authority.record``) before
    any of them reaches the device. ``context`` goes into their audit events;
    ``issuer`` names ``ca`` as the workspace records it (else ``record`` finds it
    from each certificate's authorityKeyIdentifier).
    """
    info = rot.info
    identity = DeviceIdentity(
        serial, recipe.product.hw_type, recipe.product.organization, recipe.product.name
    )
    issued: list[Issued] = []

    def sign(label: str, template: Template, public_key: PublicKey) -> Issued:
        details = {"device_unique_id": info.unique_id, "key": label, **(context or {})}
        certificate = ca.issue(template, public_key)
        return Issued(
            certificate, template.profile, label, device_id, details, template.subject, issuer
        )

    evidence: dict[str, Any] = {}
    first_public_key = b""
    iak_key: PublicKey | None = None
    for entry in recipe.keys:
        spec = KeySpec(entry.algorithm)
        key = _key(rot, entry.label, spec)
        record, certified = _attest(rot, entry.label, attestation)
        if record is not None:
            evidence[entry.label] = record
        csr = _csr(key, serial)
        public_key = check_csr(csr)
        if public_key != key.public_key() or not spec.matches(public_key):
            raise VerificationError(
                f"CSR for {entry.label!r} does not carry the device's {spec.algorithm} key"
            )
        if certified is not None:
            if certified.public_key != public_key:
                raise VerificationError(f"the TPM attested another key than {entry.label!r}")
            iak_key = certified.iak_public_key
        if not first_public_key:
            first_public_key = public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        if entry.profile == "idevid":
            issued.append(sign(entry.label, idevid(identity), public_key))
    if iak_key is not None:
        issued.append(sign(IAK_LABEL, iak(identity), iak_key))
    if _enrolled(type(rot)):  # a PUF: the digest of the helper data it enrolled
        evidence[ENROLMENT] = dict(cast(EnrolledRot, rot).enrolment_record())
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
