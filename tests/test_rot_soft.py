import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from keyfab.errors import (
    ConfigError,
    KeyExistsError,
    KeyNotExportableError,
    KeyNotFoundError,
    RotLockedError,
    UnsupportedError,
)
from keyfab.rot import KeyAlgorithm, KeySpec, RootOfTrust, load_key, open_rot
from keyfab.rot.soft import SoftRootOfTrust

ALL = list(KeyAlgorithm)


@pytest.mark.parametrize(
    "algorithm", [KeyAlgorithm.EC_P256, KeyAlgorithm.EC_P384, KeyAlgorithm.RSA_2048]
)
def test_keys_sign_inside_and_verify_outside(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    rot = SoftRootOfTrust(tmp_path / "dev")
    key = rot.generate_key("k", KeySpec(algorithm))
    assert KeySpec(algorithm).matches(key.public_key())
    if algorithm.is_ec:
        signature = key.sign(b"msg", ec.ECDSA(hashes.SHA256()))
        key.public_key().verify(signature, b"msg", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
        digest = hashes.Hash(hashes.SHA256())
        digest.update(b"msg")
        prehashed = key.sign(digest.finalize(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        key.public_key().verify(prehashed, b"msg", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
    else:
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        signature = key.sign(b"msg", pss, hashes.SHA256())  # type: ignore[call-arg]
        key.public_key().verify(signature, b"msg", pss, hashes.SHA256())  # type: ignore[call-arg]


def test_private_key_never_leaves(tmp_path: Path) -> None:
    key = SoftRootOfTrust(tmp_path / "d").generate_key("k", KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(KeyNotExportableError):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    with pytest.raises(KeyNotExportableError):
        key.private_numbers()
    with pytest.raises(UnsupportedError):
        key.exchange(ec.ECDH(), key.public_key())  # type: ignore[union-attr]


def test_key_files_are_0600_and_reload_by_uri(tmp_path: Path) -> None:
    rot = SoftRootOfTrust(tmp_path / "d")
    key = rot.generate_key("ca", KeySpec(KeyAlgorithm.EC_P256))
    mode = stat.S_IMODE((tmp_path / "d" / "ca.pem").stat().st_mode)
    assert mode == 0o600
    again = load_key(f"soft:{tmp_path / 'd' / 'ca.pem'}")
    assert again.public_key() == key.public_key()
    assert isinstance(open_rot(f"soft:{tmp_path / 'd' / 'ca.pem'}"), RootOfTrust)


def test_unique_id_is_stable_and_distinct(tmp_path: Path) -> None:
    device = SoftRootOfTrust(tmp_path / "a")
    device.generate_key("k", KeySpec(KeyAlgorithm.EC_P256))  # saves the identity with the key
    first = device.info.unique_id
    assert SoftRootOfTrust(tmp_path / "a").info.unique_id == first
    assert SoftRootOfTrust(tmp_path / "b").info.unique_id != first


@pytest.mark.parametrize("label", ["../escape", "a/b", "", ".hidden", "x" * 65, "sp ace"])
def test_labels_cannot_escape(tmp_path: Path, label: str) -> None:
    rot = SoftRootOfTrust(tmp_path / "d")
    with pytest.raises(ConfigError):
        rot.generate_key(label, KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(ConfigError):
        rot.store_object(label, b"x")


def test_existing_and_missing(tmp_path: Path) -> None:
    rot = SoftRootOfTrust(tmp_path / "d")
    rot.generate_key("k", KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(KeyExistsError):
        SoftRootOfTrust(tmp_path / "d").generate_key("k", KeySpec(KeyAlgorithm.EC_P256))
    with pytest.raises(KeyNotFoundError):
        rot.key("nope")
    with pytest.raises(KeyNotFoundError):
        rot.load_object("nope")


def test_lock_freezes_and_counters_only_rise(tmp_path: Path) -> None:
    rot = SoftRootOfTrust(tmp_path / "d")
    counter = rot.counter("rollback")
    assert counter.advance_to(5) == 5
    assert counter.advance_to(2) == 5
    rot.store_object("cert", b"der")
    rot.lock()
    reopened = SoftRootOfTrust(tmp_path / "d")
    assert reopened.counter("rollback").read() == 5
    assert reopened.load_object("cert") == b"der"
    with pytest.raises(RotLockedError):
        reopened.store_object("cert", b"other")
    with pytest.raises(RotLockedError):
        reopened.generate_key("new", KeySpec(KeyAlgorithm.EC_P256))


def test_random_bounds() -> None:
    rot = SoftRootOfTrust(None)
    assert len(rot.random(32)) == 32
    with pytest.raises(ConfigError):
        rot.random(-1)
    with pytest.raises(ConfigError):
        rot.random(1 << 30)
