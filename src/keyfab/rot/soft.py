"""The ``soft`` root of trust: keys in files (mode 0600) or in memory.

For development, tests and simulated devices only. A file can be copied, so a
soft key is no device identity; keyfab says so with a SoftRotWarning. The layout
of a soft root of trust directory::

    <label>.pem     private keys (PKCS#8, mode 0600), written when generated
    seal.key        the AES-256 key ``seal()`` uses (0600), made on first use
    rot.json        unique id, counters, locked flag and data objects (base64), 0600

Like a device committing its configuration, ``rot.json`` is written atomically
when a batch opens a new device (its identity), at ``lock()`` and ``close()``,
not on every change: file creation dominates the cost of a simulated device.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from keyfab import securefile
from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyfabError,
    KeyNotFoundError,
    RotError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot import _aead
from keyfab.rot._keys import HardwareECPrivateKey, HardwareRSAPrivateKey
from keyfab.rot._state import StateCounter
from keyfab.rot.base import (
    MAX_SEALED,
    Capability,
    Evidence,
    KeySpec,
    KeyUsage,
    MonotonicCounter,
    PrivateKey,
    RotInfo,
    SealBinding,
    check_label,
    check_random_size,
)
from keyfab.rot.uri import KeyUri

_SEAL_KEY = "seal.key"
_SoftKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class SoftRotWarning(UserWarning):
    """Keys of the soft root of trust are ordinary files: never for production."""


def _warn() -> None:
    warnings.warn(
        "soft root of trust: private keys are ordinary files, for development only",
        SoftRotWarning,
        stacklevel=3,
    )


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600, whole or not at all; never overwrite a key.

    ``securefile.write_secret`` does the writing; this names its failures the
    way the root-of-trust seam does.
    """
    try:
        securefile.write_secret(path, data)
    except FileExistsError:
        raise KeyExistsError(f"{path.name} already exists") from None
    except OSError as error:
        raise RotError(f"cannot write {path}: {error.strerror}") from None


_STATE_TEMPORARY = ".rot.json.tmp"
"""The fixed temporary name earlier versions wrote ``rot.json`` through (swept on open)."""


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``path`` atomically: readers see the old or the new bytes, never half.

    Through ``securefile``: a fresh ``O_EXCL|O_NOFOLLOW`` temporary, so a
    symlink planted under the temporary's name is never written through, and
    a crash leaves a name ``securefile.sweep_temporaries`` recognises.
    """
    try:
        securefile.write_secret(path, data, replace=True)
    except OSError as error:
        raise RotError(f"cannot write {path}: {error.strerror}") from None


def _wrap(label: str, key: _SoftKey, *, agreement: bool = False) -> PrivateKey:
    """A key for one job, as hardware makes them: signing, or (``agreement``) ECDH only,
    so code developed on the soft driver fails here the way it would on a TPM."""
    if isinstance(key, ec.EllipticCurvePrivateKey):

        def sign_ec(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            if agreement:
                raise UnsupportedError(f"soft: {label!r} is a key-agreement key; it cannot sign")
            return key.sign(digest, ec.ECDSA(utils.Prehashed(algorithm)))

        def agree(peer: ec.EllipticCurvePublicKey) -> bytes:
            return key.exchange(ec.ECDH(), peer)

        return HardwareECPrivateKey(label, key.public_key(), sign_ec, agree if agreement else None)

    def sign_rsa(
        digest: bytes, algorithm: hashes.HashAlgorithm, pad: padding.AsymmetricPadding
    ) -> bytes:
        return key.sign(digest, pad, utils.Prehashed(algorithm))

    return HardwareRSAPrivateKey(label, key.public_key(), sign_rsa)


def _generate(spec: KeySpec) -> _SoftKey:
    if spec.algorithm.is_ec:
        return ec.generate_private_key(spec.algorithm.curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=spec.algorithm.rsa_bits)


class SoftRootOfTrust:
    """A root of trust in a directory (``directory``) or, with None, in memory."""

    def __init__(self, directory: Path | None = None):
        _warn()
        self._directory = directory
        self._keys: dict[str, _SoftKey] = {}
        self._seal_key: bytes | None = None
        self._dirty = False
        self._state: dict[str, Any] = self._load_state()
        self.info = RotInfo(
            kind="soft",
            vendor="keyfab",
            model="soft (development only)",
            unique_id=self._state["unique_id"],
            capabilities=frozenset({Capability.MONOTONIC_COUNTER, Capability.LOCK}),
        )

    @property
    def locked(self) -> bool:
        return bool(self._state["locked"])

    def _load_state(self) -> dict[str, Any]:
        fresh = {"unique_id": secrets.token_hex(16), "counters": {}, "locked": False, "objects": {}}
        if self._directory is None:
            return fresh
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            return dict(json.loads((self._directory / "rot.json").read_bytes()))
        except FileNotFoundError:
            self._dirty = True  # a new device: its identity is saved with the first flush
            return fresh
        except (OSError, ValueError) as error:
            raise RotError(f"soft root of trust {self._directory} is unreadable: {error}") from None

    def _changed(self) -> None:
        self._dirty = True

    def flush(self) -> None:
        """Write the state and objects, atomically, if anything changed."""
        if self._dirty and self._directory is not None:
            _replace_file(self._directory / "rot.json", json.dumps(self._state).encode())
        self._dirty = False

    def _file(self, label: str, suffix: str) -> Path:
        assert self._directory is not None
        return self._directory / f"{check_label(label)}{suffix}"

    def _check_unlocked(self) -> None:
        if self.locked:
            raise RotLockedError(f"soft root of trust {self.info.unique_id} is locked")

    def generate_key(self, label: str, spec: KeySpec) -> PrivateKey:
        check_label(label)
        self._check_unlocked()
        if label in self._keys:
            raise KeyExistsError(f"key {label!r} already exists")
        if spec.usage is KeyUsage.AGREE and not spec.algorithm.is_ec:
            raise UnsupportedError(f"soft: key agreement needs an EC key, not {spec.algorithm}")
        key = _generate(spec)
        if self._directory is not None:
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_secret(self._file(label, ".pem"), pem)
        self._keys[label] = key
        if spec.usage is KeyUsage.AGREE:
            self._state.setdefault("agreement", []).append(label)
            self._changed()
        self.flush()  # the device's identity is on disk with its first key
        return self._wrapped(label, key)

    def _wrapped(self, label: str, key: _SoftKey) -> PrivateKey:
        return _wrap(label, key, agreement=label in self._state.get("agreement", ()))

    def key(self, label: str) -> PrivateKey:
        check_label(label)
        if label not in self._keys:
            self._keys[label] = self._read_key(label)
        return self._wrapped(label, self._keys[label])

    def _read_key(self, label: str) -> _SoftKey:
        if self._directory is None:
            raise KeyNotFoundError(f"no key {label!r}")
        try:
            key = serialization.load_pem_private_key(self._file(label, ".pem").read_bytes(), None)
        except FileNotFoundError:
            raise KeyNotFoundError(f"no key {label!r} in {self._directory}") from None
        except (OSError, ValueError, TypeError) as error:
            raise RotError(f"key file for {label!r} is unreadable: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise RotError(f"key {label!r} is neither EC nor RSA")
        return key

    def random(self, n: int) -> bytes:
        check_random_size(n)
        return secrets.token_bytes(n)

    def store_object(self, label: str, data: bytes) -> None:
        check_label(label)
        self._check_unlocked()
        self._state["objects"][label] = base64.b64encode(data).decode()
        self._changed()

    def load_object(self, label: str) -> bytes:
        check_label(label)
        try:
            return base64.b64decode(self._state["objects"][label])
        except KeyError:
            raise KeyNotFoundError(f"no object {label!r}") from None

    def certify(self, label: str, nonce: bytes) -> Evidence | None:
        return None

    def counter(self, name: str) -> MonotonicCounter:
        return StateCounter(self._state["counters"], check_label(name), self._changed)

    # sealing and erasing (the device API's lock/unlock and tamper response) ---

    def _sealing_key(self) -> bytes:
        """The key file ``seal()`` uses: as safe as the other key files, no more."""
        if self._seal_key is not None:
            return self._seal_key
        if self._directory is None:
            self._seal_key = secrets.token_bytes(_aead.KEY_BYTES)
            return self._seal_key
        path = self._directory / _SEAL_KEY
        with contextlib.suppress(KeyExistsError):  # made earlier: read it below
            write_secret(path, secrets.token_bytes(_aead.KEY_BYTES))
        try:
            key = securefile.read_bounded(path, _aead.KEY_BYTES, "soft sealing key")
        except KeyfabError as error:
            raise RotError(str(error)) from None
        if len(key) != _aead.KEY_BYTES:
            raise RotError(f"soft sealing key {path} is damaged")
        self._seal_key = key
        return key

    def seal(self, data: bytes, binding: SealBinding) -> bytes:
        """AES-256-GCM under ``seal.key``; the binding's context is authenticated."""
        if len(data) > MAX_SEALED:
            raise ConfigError(f"soft: cannot seal more than {MAX_SEALED} bytes")
        return _aead.encrypt(self._sealing_key(), data, binding.context)

    def unseal(self, payload: bytes, binding: SealBinding) -> bytes:
        return _aead.decrypt(self._sealing_key(), payload, binding.context, "soft: locked data")

    def erase(self) -> int:
        """Delete every key file, the sealing key and the data objects; counters stay."""
        erased = len(self._state["objects"])
        self._keys.clear()
        self._seal_key = None
        self._state["objects"] = {}
        self._state["agreement"] = []
        self._changed()
        if self._directory is not None:
            for path in [*self._directory.glob("*.pem"), self._directory / _SEAL_KEY]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    erased += 1
        self.flush()
        return erased

    def lock(self) -> None:
        if not self.locked:
            self._state["locked"] = True
            self._changed()
        self.flush()

    def close(self) -> None:
        self.flush()
        self._keys.clear()


def _sweep(directory: Path) -> None:
    """Remove the temporary files a killed writer left in a device directory.

    ``securefile`` names (and so recognises) its own temporaries; ``rot.json``'s
    is this driver's. Nothing else is touched, and no symlink is followed.
    """
    securefile.sweep_temporaries(directory)
    state = directory / _STATE_TEMPORARY
    with contextlib.suppress(OSError):
        if stat.S_ISREG(state.lstat().st_mode):
            state.unlink()


def open_device(options: Mapping[str, Any], slot: int) -> SoftRootOfTrust:
    """One simulated device: ``path`` is its directory; without it, memory only.

    Opening a device directory first clears what a crash left there, then
    saves a new device's identity at once: like hardware, a device has its
    unique id from the moment it is opened, so a second slot pointing at the
    same directory reads the same id and the batch can tell it is one device.
    """
    from keyfab.rot.options import SoftOptions  # a batch's driver options: pydantic only here

    unknown = set(options) - set(SoftOptions.model_fields)
    if unknown:
        raise ConfigError(f"soft driver: unknown option(s) {', '.join(sorted(unknown))}")
    path = options.get("path")
    if not path:
        return SoftRootOfTrust(None)
    directory = Path(str(path))
    if directory.is_dir():
        _sweep(directory)
    rot = SoftRootOfTrust(directory)
    rot.flush()
    return rot


def open_uri(uri: KeyUri) -> SoftRootOfTrust:
    """``soft:DIR/label.pem`` opens the soft root of trust in DIR."""
    if uri.path == "memory":
        return SoftRootOfTrust(None)
    return SoftRootOfTrust(Path(uri.path).parent)
