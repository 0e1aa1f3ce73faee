"""The device-side API: one device's root of trust as sign, ECDH, lock, counters, erase.

The same calls whatever holds the keys (TPM 2.0, a PKCS#11 secure element, the
soft driver for development); the CLI (``keyfab device ...``) and the agent
(``keyfab agent``, which serves them on a Unix socket) both call this class.
Every call goes through the root-of-trust seam (:mod:`keyfab.rot`), and one
lock serialises them: a TPM or token session does one thing at a time.

``state_dir`` holds what is public and device-local: the renewed certificate
chain (``certificate.pem``) and the maker-signed PCR policies (``policies/``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyfab import securefile
from keyfab.device import blob as blobs
from keyfab.device.config import DEFAULT_PCRS, DeviceConfig
from keyfab.device.policy import MAX_POLICY_FILE, parse_policy, verify_policy
from keyfab.errors import (
    ConfigError,
    KeyNotFoundError,
    UnsupportedError,
    VerificationError,
)
from keyfab.rot import (
    KeyAlgorithm,
    KeySpec,
    KeyUsage,
    PcrApproval,
    PrivateKey,
    RootOfTrust,
    SealBinding,
    SealingRot,
    check_label,
    open_rot,
    parse_key_uri,
)
from keyfab.rot.drivers import open_device

__all__ = ["DeviceApi", "DeviceConfig"]

CERTIFICATE_SUFFIX = "-cert"  # provisioning writes a key's certificate as "<label>-cert"
CHAIN_PREFIX = "ca-cert-"  # and the issuing chain as "ca-cert-0", "ca-cert-1", ...
MAX_CHAIN = 8
MAX_CERTIFICATE_FILE = 64 * 1024
MAX_POLICIES = 64
MAX_HKDF = 255 * 32
_CERTIFICATE_FILE = "certificate.pem"
_POLICY_DIR = "policies"
_T = TypeVar("_T")


class DeviceApi:
    """One device's root of trust, opened by URI; a context manager."""

    def __init__(
        self,
        rot: RootOfTrust,
        state_dir: Path,
        *,
        identity: str = "idevid",
        pcrs: Sequence[int] = DEFAULT_PCRS,
        pcr_bank: str = "sha256",
        policy_key: bytes | None = None,
    ):
        self.rot = rot
        self.state_dir = state_dir
        self.identity = check_label(identity)
        self.pcrs = tuple(sorted(set(pcrs)))
        self.pcr_bank = pcr_bank
        self.policy_key = policy_key
        self._lock = threading.RLock()
        self._keys: dict[str, PrivateKey] = {}  # a token lookup per call costs more than a sign

    @classmethod
    def open(
        cls,
        rot_uri: str,
        *,
        state_dir: Path,
        identity: str = "idevid",
        pcrs: Sequence[int] = DEFAULT_PCRS,
        pcr_bank: str = "sha256",
        policy_key: bytes | None = None,
    ) -> DeviceApi:
        """Open the root of trust ``rot_uri`` names: ``tpm2:tcti=...``,
        ``pkcs11:token=...?...``, or ``soft:DIR`` (a soft device directory)."""
        uri = parse_key_uri(rot_uri)
        if uri.scheme == "soft":  # soft:DIR is a device directory (soft:memory: none)
            rot = open_device("soft", {"path": "" if uri.path == "memory" else uri.path}, 0)
        else:
            rot = open_rot(uri)
        return cls(
            rot,
            state_dir,
            identity=identity,
            pcrs=pcrs,
            pcr_bank=pcr_bank,
            policy_key=policy_key,
        )

    @classmethod
    def from_config(cls, config: DeviceConfig) -> DeviceApi:
        return cls.open(
            config.rot,
            state_dir=config.state_dir,
            identity=config.identity,
            pcrs=config.pcrs,
            pcr_bank=config.pcr_bank,
            policy_key=config.policy_key_der(),
        )

    def close(self) -> None:
        with self._lock:
            self.rot.close()

    def __enter__(self) -> DeviceApi:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def exclusive(self) -> Iterator[RootOfTrust]:
        """The root of trust to oneself, for what this class does not wrap (the agent's
        attestation quote): no other call runs meanwhile."""
        with self._lock:
            yield self.rot

    def _serial(self, call: Callable[[], _T]) -> _T:
        with self._lock:
            return call()

    # keys ------------------------------------------------------------------

    def create_key(
        self, label: str, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256, *, agreement: bool = False
    ) -> bytes:
        """Make a key in the root of trust (``agreement``: for ECDH only); its SPKI DER."""
        usage = KeyUsage.AGREE if agreement else KeyUsage.SIGN
        key = self._serial(lambda: self.rot.generate_key(label, KeySpec(algorithm, usage)))
        return _spki(key.public_key())

    def public_key(self, label: str) -> bytes:
        """The SubjectPublicKeyInfo (DER) of key ``label``."""
        return _spki(self._key(label).public_key())

    def _key(self, label: str) -> PrivateKey:
        with self._lock:
            if label not in self._keys:
                self._keys[label] = self.rot.key(check_label(label))
            return self._keys[label]

    def sign(
        self, label: str, *, message: bytes | None = None, digest: bytes | None = None
    ) -> bytes:
        """DER ECDSA (P-256: SHA-256, P-384: SHA-384) or RSA-PSS (SHA-256) over a message
        or its digest."""
        key = self._key(label)
        algorithm = _hash_for(key)
        prehashed = utils.Prehashed(algorithm)
        data = _digest_of(message, digest, algorithm)
        with self._lock:
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return key.sign(data, ec.ECDSA(prehashed))
            return key.sign(data, _pss(algorithm), prehashed)

    def verify(
        self,
        label: str,
        signature: bytes,
        *,
        message: bytes | None = None,
        digest: bytes | None = None,
    ) -> bool:
        """Whether ``signature`` is ``sign``'s over that message or digest by key ``label``."""
        key = self._key(label)
        algorithm = _hash_for(key)
        data = _digest_of(message, digest, algorithm)
        public = key.public_key()
        try:
            if isinstance(public, ec.EllipticCurvePublicKey):
                public.verify(signature, data, ec.ECDSA(utils.Prehashed(algorithm)))
            else:
                public.verify(signature, data, _pss(algorithm), utils.Prehashed(algorithm))
        except InvalidSignature:
            return False
        return True

    def ecdh(
        self, label: str, peer_public_key: bytes, *, info: bytes = b"", length: int = 32
    ) -> bytes:
        """ECDH with key ``label`` in the root of trust, then HKDF-SHA256 (no salt, ``info``)."""
        if not 1 <= length <= MAX_HKDF:
            raise ConfigError(f"ecdh: length must be 1 to {MAX_HKDF} bytes")
        try:
            peer = serialization.load_der_public_key(peer_public_key)
        except ValueError:
            raise ConfigError(
                "ecdh: the peer's public key is not SubjectPublicKeyInfo DER"
            ) from None
        if not isinstance(peer, ec.EllipticCurvePublicKey):
            raise ConfigError("ecdh: the peer's public key is not an EC key")
        key = self._key(label)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UnsupportedError(f"ecdh: key {label!r} is not an EC key")
        shared = self._serial(lambda: key.exchange(ec.ECDH(), peer))
        return HKDF(hashes.SHA256(), length, salt=None, info=info).derive(shared)

    # random numbers and counters ---------------------------------------------

    def random(self, n: int) -> bytes:
        return self._serial(lambda: self.rot.random(n))

    def counter(self, name: str) -> int:
        """The current value of monotonic counter ``name`` (created at its first use)."""
        return self._serial(lambda: self.rot.counter(check_label(name)).read())

    def increment(self, name: str) -> int:
        """Add one to counter ``name``; the new value."""
        with self._lock:
            counter = self.rot.counter(check_label(name))
            return counter.advance_to(counter.read() + 1)

    # the device's identity ----------------------------------------------------

    def certificate(self) -> list[bytes]:
        """The current identity certificate and its chain (DER, leaf first).

        A renewed chain kept by ``store_certificate`` wins over the one written at
        the factory (``<identity>-cert`` and ``ca-cert-N`` objects in the root of trust).
        """
        renewed = self.state_dir / _CERTIFICATE_FILE
        if renewed.exists():
            data = securefile.read_bounded(renewed, MAX_CERTIFICATE_FILE, "device certificate")
            try:
                chain = x509.load_pem_x509_certificates(data)
            except ValueError:
                raise ConfigError(f"{renewed} holds no PEM certificate") from None
            return [c.public_bytes(serialization.Encoding.DER) for c in chain]
        with self._lock:
            leaf = self.rot.load_object(self.identity + CERTIFICATE_SUFFIX)
            return [leaf, *self._factory_chain()]

    def _factory_chain(self) -> list[bytes]:
        chain = []
        for index in range(MAX_CHAIN):
            try:
                chain.append(self.rot.load_object(f"{CHAIN_PREFIX}{index}"))
            except KeyNotFoundError:
                break
        return chain

    def store_certificate(self, chain: Sequence[bytes]) -> None:
        """Keep a renewed certificate chain (DER, leaf first) as the device's current one."""
        if not chain:
            raise ConfigError("store_certificate: the chain is empty")
        pem = b"".join(
            x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
            for der in chain
        )
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        securefile.write_secret(self.state_dir / _CERTIFICATE_FILE, pem, replace=True)

    # lock and unlock ------------------------------------------------------------

    def lock(self, data: bytes) -> bytes:
        """``data`` bound to this device (and, on a TPM, to a maker-approved boot state)."""
        sealer = self._sealer()
        binding = blobs.Binding.of(self.rot.info.kind)
        device = blobs.device_id(self.rot.info)
        context = blobs.context(binding, device)
        with self._lock:
            payload = sealer.seal(data, self._binding(context, self._approvals()))
        return blobs.Blob(binding, device, payload).encode()

    def unlock(self, blob: bytes) -> bytes:
        """The data ``lock`` bound, or VerificationError: another device's, changed, or
        (TPM) a boot state the maker did not approve."""
        sealer = self._sealer()
        parsed = blobs.decode(blob)
        if parsed.binding is not blobs.Binding.of(self.rot.info.kind):
            raise VerificationError(
                f"locked blob is bound to a {parsed.binding.name.lower()} root of trust, "
                f"not this device's {self.rot.info.kind}"
            )
        if parsed.device != blobs.device_id(self.rot.info):
            raise VerificationError("locked blob belongs to another device")
        with self._lock:
            binding = self._binding(parsed.context, self._approvals())
            return sealer.unseal(parsed.payload, binding)

    def _sealer(self) -> SealingRot:
        if not isinstance(self.rot, SealingRot):
            raise UnsupportedError(f"a {self.rot.info.kind} root of trust cannot lock data")
        return self.rot

    def _binding(self, header: bytes, approvals: tuple[PcrApproval, ...]) -> SealBinding:
        return SealBinding(context=header, authority=self.policy_key, approvals=approvals)

    def _approvals(self) -> tuple[PcrApproval, ...]:
        """The stored maker-signed policies over this product's PCR selection."""
        directory = self.state_dir / _POLICY_DIR
        if self.policy_key is None or not directory.is_dir():
            return ()
        found = []
        for path in sorted(directory.glob("*.json"))[:MAX_POLICIES]:
            approval = parse_policy(securefile.read_bounded(path, MAX_POLICY_FILE, "PCR policy"))
            if approval.pcrs == self.pcrs and approval.bank == self.pcr_bank:
                found.append(approval)
        return tuple(found)

    def apply_policy(self, data: bytes) -> Path:
        """Keep a maker-signed PCR policy (checked first) for lock/unlock; its file."""
        if self.policy_key is None:
            raise ConfigError("no policy-signing key is configured (policy_key)")
        approval = parse_policy(data)
        verify_policy(approval, self.policy_key)
        if approval.pcrs != self.pcrs or approval.bank != self.pcr_bank:
            raise ConfigError(
                f"the policy covers {approval.bank} PCRs {list(approval.pcrs)}, "
                f"this product binds {self.pcr_bank} PCRs {list(self.pcrs)}"
            )
        directory = self.state_dir / _POLICY_DIR
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / f"{approval.policy.hex()[:32]}.json"
        securefile.write_secret(path, data, replace=True)
        return path

    # tamper response ----------------------------------------------------------------

    def erase(self) -> None:
        """Destroy the device's keys and objects (TPM: evict and undefine; PKCS#11:
        destroy; soft: delete the files) and forget the renewed certificate."""
        with self._lock:
            self._keys.clear()
            self._sealer().erase()
            (self.state_dir / _CERTIFICATE_FILE).unlink(missing_ok=True)


def _spki(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hash_for(key: PrivateKey) -> hashes.HashAlgorithm:
    """SHA-384 for P-384 keys, SHA-256 for the rest."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _pss(algorithm: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH)


def _digest_of(
    message: bytes | None, digest: bytes | None, algorithm: hashes.HashAlgorithm
) -> bytes:
    """The digest to sign: given, or of the message; exactly one of them."""
    if (message is None) == (digest is None):
        raise ConfigError("give a message or a digest, not both or neither")
    if digest is not None:
        if len(digest) != algorithm.digest_size:
            raise ConfigError(
                f"the digest must be {algorithm.digest_size} bytes ({algorithm.name}), "
                f"not {len(digest)}"
            )
        return digest
    assert message is not None
    return hashlib.new(algorithm.name, message).digest()
