"""The root-of-trust seam: what every driver (soft, pkcs11, tpm2) provides.

A root of trust holds private keys it will not give out. keyfab asks it to make
keys, sign, store small objects (certificates, manifests), attest its keys where
the hardware can, keep monotonic counters and lock itself at the end of
provisioning. Nothing above this seam knows which hardware it talks to.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyfab.errors import ConfigError, UnsupportedError
from keyfab.names import check_name
from keyfab.rot._keys import HardwareECPrivateKey, HardwareRSAPrivateKey

PrivateKey = HardwareECPrivateKey | HardwareRSAPrivateKey
"""A private key held by a root of trust; a real ``cryptography`` private key."""

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def check_label(label: str) -> str:
    """Labels name keys and objects; they become file names and token attributes.

    The one name rule (``keyfab.names``): letters, digits, '.', '_', '-', never '..'.
    """
    return check_name("label", label)


MAX_RANDOM = 1 << 16
"""The most bytes one ``random()`` call returns; more is a mistake, not a need."""


def check_random_size(n: int) -> int:
    """Every driver's bound on ``random(n)``, checked before anything is allocated."""
    if not 0 <= n <= MAX_RANDOM:
        raise ConfigError(f"random: ask for 0 to {MAX_RANDOM} bytes, not {n}")
    return n


class KeyAlgorithm(enum.StrEnum):
    """Key types keyfab asks roots of trust for."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"

    @property
    def is_ec(self) -> bool:
        return self.value.startswith("ec-")

    @property
    def curve(self) -> ec.EllipticCurve:
        curves: dict[KeyAlgorithm, ec.EllipticCurve] = {
            KeyAlgorithm.EC_P256: ec.SECP256R1(),
            KeyAlgorithm.EC_P384: ec.SECP384R1(),
        }
        if self not in curves:
            raise UnsupportedError(f"{self.value} is not an elliptic-curve algorithm")
        return curves[self]

    @property
    def rsa_bits(self) -> int:
        if self.is_ec:
            raise UnsupportedError(f"{self.value} is not an RSA algorithm")
        return int(self.value.removeprefix("rsa-"))

    @classmethod
    def of(cls, public_key: object) -> KeyAlgorithm:
        """The algorithm of an existing public key, or UnsupportedError."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            for algorithm in (cls.EC_P256, cls.EC_P384):
                if public_key.curve.name == algorithm.curve.name:
                    return algorithm
            raise UnsupportedError(f"unsupported curve {public_key.curve.name}")
        if isinstance(public_key, rsa.RSAPublicKey):
            try:
                return cls(f"rsa-{public_key.key_size}")
            except ValueError:
                raise UnsupportedError(f"unsupported RSA size {public_key.key_size}") from None
        raise UnsupportedError(f"unsupported key type {type(public_key).__name__}")


class KeyUsage(enum.StrEnum):
    """What a key may do: hardware keys are made for one job (a TPM key signs or
    decrypts, a PKCS#11 key has CKA_SIGN or CKA_DERIVE), so the job is chosen
    when the key is made."""

    SIGN = "sign"
    AGREE = "agree"  # elliptic-curve key agreement (ECDH): TPM2_ECDH_ZGen, CKM_ECDH1_DERIVE


@dataclass(frozen=True)
class KeySpec:
    """What key to generate. Keys are always non-exportable."""

    algorithm: KeyAlgorithm
    usage: KeyUsage = KeyUsage.SIGN

    def matches(self, public_key: object) -> bool:
        """True if ``public_key`` is of this spec's algorithm and size."""
        try:
            return KeyAlgorithm.of(public_key) is self.algorithm
        except UnsupportedError:
            return False


class Capability(enum.StrEnum):
    """Optional things a root of trust can do."""

    KEY_ATTESTATION = "key-attestation"
    MONOTONIC_COUNTER = "monotonic-counter"
    LOCK = "lock"
    HARDWARE = "hardware"  # keys are protected by hardware, not files


@dataclass(frozen=True)
class RotInfo:
    """Who a root of trust is. ``unique_id`` is stable for the life of the device."""

    kind: str
    vendor: str
    model: str
    unique_id: str
    capabilities: frozenset[Capability] = frozenset()


@dataclass(frozen=True)
class Evidence:
    """Proof from the hardware about a key (for example a TPM2_Certify result).

    ``format`` names how to read ``parts``; the attest package verifies it.
    """

    format: str
    parts: Mapping[str, bytes] = field(default_factory=dict)


@runtime_checkable
class MonotonicCounter(Protocol):
    """A counter that only goes up: firmware anti-rollback."""

    name: str

    def read(self) -> int: ...

    def advance_to(self, value: int) -> int:
        """Raise the counter to at least ``value``; never lowers it. Returns the new value."""
        ...


MAX_SEALED = 1 << 16
"""The most bytes one ``seal()`` call protects: device secrets, not files."""


@dataclass(frozen=True)
class PcrApproval:
    """A PCR policy the maker signed, for TPM2_PolicyAuthorize.

    ``policy`` is the PolicyPCR digest over ``pcrs`` of ``bank`` with the values a
    release measures; ``signature`` is the maker's DER ECDSA over
    SHA-256(``policy``) (an empty policyRef). Checked by the TPM, never trusted here.
    """

    bank: str
    pcrs: tuple[int, ...]
    policy: bytes
    signature: bytes


@dataclass(frozen=True)
class SealBinding:
    """What sealed data is bound to besides the device that sealed it.

    ``context`` is authenticated but not secret (a locked blob's header: change
    one byte and unsealing fails). ``authority`` is the SPKI DER of the maker's
    policy-signing key and ``approvals`` the PCR policies it signed: a TPM seals
    under PolicyAuthorize(authority), so data stays readable across an update
    the maker approves and not after any other change of the boot state.
    Drivers without measured boot ignore both.
    """

    context: bytes
    authority: bytes | None = None
    approvals: tuple[PcrApproval, ...] = ()


@runtime_checkable
class SealingRot(Protocol):
    """A root of trust that can bind data to itself and destroy what it holds."""

    def seal(self, data: bytes, binding: SealBinding) -> bytes:
        """Data only this root of trust can recover (with ``binding`` satisfied)."""
        ...

    def unseal(self, payload: bytes, binding: SealBinding) -> bytes:
        """``seal``'s data back; VerificationError if it is not this device's or was changed."""
        ...

    def erase(self) -> int:
        """Destroy every key and object keyfab made here (tamper response); how many."""
        ...


@runtime_checkable
class EnrolledRot(Protocol):
    """A root of trust whose keys rest on public enrolment data (a PUF's helper data).

    The registry keeps ``enrolment_record()`` with the device's evidence, so the
    helper data a device uses later can be checked against what was enrolled.
    """

    def enrolment_record(self) -> Mapping[str, str]: ...


@runtime_checkable
class RootOfTrust(Protocol):
    """The seam every hardware driver implements."""

    info: RotInfo

    def generate_key(self, label: str, spec: KeySpec) -> PrivateKey:
        """Make a new non-exportable key inside the hardware."""
        ...

    def key(self, label: str) -> PrivateKey:
        """An existing key, or KeyNotFoundError."""
        ...

    def random(self, n: int) -> bytes:
        """``n`` bytes from the hardware's random number generator."""
        ...

    def store_object(self, label: str, data: bytes) -> None:
        """Write (or replace) a data object: a certificate, a chain, a manifest."""
        ...

    def load_object(self, label: str) -> bytes:
        """Read a data object back, or KeyNotFoundError."""
        ...

    def certify(self, label: str, nonce: bytes) -> Evidence | None:
        """Hardware proof that key ``label`` lives here, or None if it cannot."""
        ...

    def counter(self, name: str) -> MonotonicCounter:
        """A monotonic counter, or UnsupportedError."""
        ...

    def lock(self) -> None:
        """Freeze the configuration at the end of provisioning. Idempotent."""
        ...

    def close(self) -> None:
        """Release sessions and handles."""
        ...
